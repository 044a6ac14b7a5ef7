// Critical alert → race control (ADR 0011): the recipients and the text of the notification.
//
// The "Run Script" operation of the example Flow on `items.create` of processor_events, after
// the condition (a critical alert, open or ended, not yet acknowledged or dismissed) and three reads with full access: `notified` (a
// notification already sent for this alert), `alert` (the alert with its car and stage) and
// `race_control` (the active users of the race control role). Throwing ends the Flow without a
// notification: one notification per alert, none when nobody is in the role.
module.exports = function (data) {
  if (data.notified && data.notified.length > 0) throw new Error('already notified');
  var users = data.race_control || [];
  if (users.length === 0) throw new Error('no active race control user');
  var alert = data.alert || {};
  var entry = alert.entry || {};
  var stage = alert.stage || {};
  var kind = String(alert.kind || 'alert').replace(/_/g, ' ');
  var car = entry.number != null ? 'car ' + entry.number : 'no car';
  var crew = entry.crew_name ? ' (' + entry.crew_name + ')' : '';
  var where = stage.name ? ', ' + stage.name : '';
  var lines = [
    '**' + kind + '** — ' + car + crew + where,
    '',
    'Started at ' + (alert.started_at || 'unknown') + '.',
  ];
  if (alert.details) lines.push('', '`' + JSON.stringify(alert.details) + '`');
  return {
    recipients: users.map(function (u) {
      return u.id;
    }),
    subject: 'Critical alert: ' + kind + ' — ' + car + where,
    message: lines.join('\n'),
  };
};
