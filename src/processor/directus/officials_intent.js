// Officials' intent (ADR 0004, ADR 0011): an edit of an output row by a person makes it an
// official's row, so the processor never overwrites it.
//
// The "Run Script" operation of a blocking (filter) Flow on `items.update` of timing_records,
// penalties, stage_results and alerts. Directus 10.13 saves what the Flow returns (its
// `return: "$last"`, this function's result) instead of the payload it was given, and checks
// the user's permissions on the returned payload afterwards.
//
// - An update without a user (Directus itself, a Flow running with full access) is left alone:
//   the processor writes with SQL and never reaches this Flow.
// - A payload that sets `source` itself is an explicit choice (`auto` hands a row back to the
//   processor) and is left alone.
// - On alerts an edit of `status` and `note` only (acknowledge, dismiss, with a reason) keeps
//   the alert automatic: the processor goes on updating its measurements (ADR 0004).
// - Anything else gets `source = 'manual'`; on a row that is manual already that changes
//   nothing, so a batch update of several rows is handled with one payload.
module.exports = function (data) {
  var trigger = data.$trigger || {};
  var payload = trigger.payload;
  var who = data.$accountability;
  if (!payload || typeof payload !== 'object' || Array.isArray(payload)) return payload;
  if (!who || !who.user) return payload;
  if (Object.prototype.hasOwnProperty.call(payload, 'source')) return payload;
  var fields = Object.keys(payload);
  if (fields.length === 0) return payload;
  var workingTheAlert = function (name) {
    return name === 'status' || name === 'note';
  };
  if (trigger.collection === 'alerts' && fields.every(workingTheAlert)) return payload;
  var marked = {};
  for (var i = 0; i < fields.length; i++) marked[fields[i]] = payload[fields[i]];
  marked.source = 'manual';
  return marked;
};
