import { defineDisplay, defineInterface, useApi, useStores } from '@directus/extensions-sdk';
import { computed, openBlock, createElementBlock, toDisplayString, ref, watch, resolveComponent, createVNode, withCtx, createElementVNode, normalizeClass, createTextVNode, createCommentVNode, inject } from 'vue';

/**
 * Race times as officials read and type them: pure functions, no Directus, no DOM.
 *
 * Invariant: formatting truncates to the tenth (rally timing never rounds up), exactly as
 * `processor leaderboard` does (src/processor/tools/leaderboard.py); parsing never loses
 * what was typed (milliseconds are kept) and rejects what it cannot read, rather than
 * guessing. Instants are epoch milliseconds or ISO-8601 strings in UTC; a time of day is
 * always in a named IANA zone (the event's), never the browser's.
 */

/** `4:12.3`, `1:02:03.4` (truncated to the tenth); `digits` 3 gives `4:12.345`. */
function formatDuration(ms, { digits = 1, prefix = '' } = {}) {
	const value = toNumber(ms);
	if (value === null) return '';
	const sign = value < 0 ? '-' : prefix;
	const abs = Math.abs(Math.trunc(value));
	const unit = digits === 3 ? 1 : 100;
	const fraction = Math.floor((abs % 1000) / unit);
	const seconds = Math.floor(abs / 1000) % 60;
	const minutes = Math.floor(abs / 60000) % 60;
	const hours = Math.floor(abs / 3600000);
	const tail = `${pad(seconds)}.${String(fraction).padStart(digits, '0')}`;
	if (hours > 0) return `${sign}${hours}:${pad(minutes)}:${tail}`;
	return `${sign}${minutes}:${tail}`;
}

/** Whether a duration has digits below the tenth (then an input shows it exactly). */
function hasMilliseconds(ms) {
	const value = toNumber(ms);
	return value !== null && Math.abs(Math.trunc(value)) % 100 !== 0;
}

const DURATION = /^(?:(\d+):)?(?:(\d+):)?(\d+)(?:[.,](\d{1,3}))?$/;

/**
 * `5:00` → 300000, `1:02:03.4` → 3723400, `45.5` → 45500 (a bare number is seconds).
 * Returns `{ ok: true, ms }` (`ms` null for an empty text) or `{ ok: false, error }`.
 */
function parseDuration(text) {
	const trimmed = String(text ?? '').trim();
	if (trimmed === '') return { ok: true, ms: null };
	const match = DURATION.exec(trimmed);
	if (!match) return { ok: false, error: 'Type h:mm:ss.s, m:ss.s or seconds' };
	const [, first, second, secondsText, fractionText] = match;
	let hours = 0;
	let minutes = 0;
	if (first !== undefined && second !== undefined) {
		hours = Number(first);
		minutes = Number(second);
		if (minutes > 59) return { ok: false, error: 'Minutes must be under 60' };
	} else if (first !== undefined) {
		minutes = Number(first);
	}
	const seconds = Number(secondsText);
	if (first !== undefined && seconds > 59) return { ok: false, error: 'Seconds must be under 60' };
	const ms = fractionText === undefined ? 0 : Number(fractionText.padEnd(3, '0'));
	return { ok: true, ms: ((hours * 60 + minutes) * 60 + seconds) * 1000 + ms };
}

/** Whether `zone` is an IANA zone this browser knows. */
function isZone(zone) {
	if (typeof zone !== 'string' || zone === '') return false;
	try {
		new Intl.DateTimeFormat('en-US', { timeZone: zone });
		return true;
	} catch {
		return false;
	}
}

const FORMATTERS = new Map();

function formatter(zone) {
	let found = FORMATTERS.get(zone);
	if (!found) {
		found = new Intl.DateTimeFormat('en-US', {
			timeZone: zone,
			hourCycle: 'h23',
			year: 'numeric',
			month: '2-digit',
			day: '2-digit',
			hour: '2-digit',
			minute: '2-digit',
			second: '2-digit',
		});
		FORMATTERS.set(zone, found);
	}
	return found;
}

/** The wall clock of an instant in a zone: `{ date: 'YYYY-MM-DD', msOfDay }`. */
function wallClock(instant, zone) {
	const ms = toInstant(instant);
	if (ms === null) return null;
	const parts = {};
	for (const part of formatter(zone).formatToParts(new Date(ms))) parts[part.type] = part.value;
	const hour = Number(parts.hour) % 24;
	const subsecond = ((ms % 1000) + 1000) % 1000;
	return {
		date: `${parts.year}-${parts.month}-${parts.day}`,
		msOfDay: ((hour * 60 + Number(parts.minute)) * 60 + Number(parts.second)) * 1000 + subsecond,
	};
}

/** The zone's offset from UTC at an instant, in milliseconds (Vilnius in May: +3 h). */
function offsetMs(instant, zone) {
	const ms = toInstant(instant);
	const clock = wallClock(ms, zone);
	const [year, month, day] = clock.date.split('-').map(Number);
	return Date.UTC(year, month - 1, day) + clock.msOfDay - ms;
}

/** `UTC+03:00`. */
function offsetLabel(instant, zone) {
	const minutes = Math.round(offsetMs(instant, zone) / 60000);
	const sign = minutes < 0 ? '-' : '+';
	const abs = Math.abs(minutes);
	return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** `09:01:00.1` (`format` time), `2026-05-01 09:01:00.1` (datetime), `2026-05-01` (date). */
function formatInstant(instant, zone, { format = 'time', digits = 1 } = {}) {
	const clock = wallClock(instant, zone);
	if (clock === null) return '';
	if (format === 'date') return clock.date;
	const time = formatTimeOfDay(clock.msOfDay, digits);
	return format === 'datetime' ? `${clock.date} ${time}` : time;
}

/** `09:01:00.1` from milliseconds since local midnight (truncated to the tenth). */
function formatTimeOfDay(msOfDay, digits = 1) {
	const seconds = Math.floor(msOfDay / 1000);
	const unit = digits === 3 ? 1 : 100;
	const fraction = String(Math.floor((msOfDay % 1000) / unit)).padStart(digits, '0');
	const hms = `${pad(Math.floor(seconds / 3600))}:${pad(Math.floor(seconds / 60) % 60)}:${pad(seconds % 60)}`;
	return `${hms}.${fraction}`;
}

const TIME = /^(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,3}))?)?$/;
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** `9:01`, `09:01:00`, `09:01:00.1`, `09:01:00.123` → milliseconds since local midnight. */
function parseTimeOfDay(text) {
	const match = TIME.exec(String(text ?? '').trim());
	if (!match) return { ok: false, error: 'Type the time as HH:MM:SS.s' };
	const [, h, m, s = '0', fraction = ''] = match;
	const hours = Number(h);
	const minutes = Number(m);
	const seconds = Number(s);
	if (hours > 23 || minutes > 59 || seconds > 59) return { ok: false, error: 'Not a time of day' };
	const ms = fraction === '' ? 0 : Number(fraction.padEnd(3, '0'));
	return { ok: true, msOfDay: ((hours * 60 + minutes) * 60 + seconds) * 1000 + ms };
}

/** Whether `text` is a calendar date `YYYY-MM-DD`. */
function parseDate(text) {
	const match = DATE.exec(String(text ?? '').trim());
	if (!match) return { ok: false, error: 'Type the date as YYYY-MM-DD' };
	const [, y, m, d] = match.map(Number);
	const probe = new Date(Date.UTC(y, m - 1, d));
	if (probe.getUTCFullYear() !== y || probe.getUTCMonth() !== m - 1 || probe.getUTCDate() !== d) {
		return { ok: false, error: 'Not a date' };
	}
	return { ok: true, date: match[0] };
}

/**
 * The instant a wall clock shows in a zone, as an ISO-8601 string in UTC with milliseconds.
 * A time that a zone skips (spring forward) resolves to the offset before the change; a time
 * that occurs twice (fall back) resolves to the first occurrence.
 */
function instantFromWallClock(date, msOfDay, zone) {
	const [year, month, day] = date.split('-').map(Number);
	const asUtc = Date.UTC(year, month - 1, day) + msOfDay;
	// The zone's offsets half a day either side cover any change of offset near this time.
	const before = asUtc - offsetMs(asUtc - HALF_DAY_MS, zone);
	const after = asUtc - offsetMs(asUtc + HALF_DAY_MS, zone);
	const shown = [before, after].filter((t) => sameWallClock(t, date, msOfDay, zone));
	return new Date(shown.length > 0 ? Math.min(...shown) : before).toISOString();
}

const HALF_DAY_MS = 12 * 3600 * 1000;

function sameWallClock(instant, date, msOfDay, zone) {
	const clock = wallClock(instant, zone);
	return clock.date === date && clock.msOfDay === msOfDay;
}

/** Epoch milliseconds of an ISO string, a Date or a number; null for nothing or garbage. */
function toInstant(value) {
	if (value === null || value === undefined || value === '') return null;
	if (value instanceof Date) return value.getTime();
	if (typeof value === 'number') return Number.isFinite(value) ? value : null;
	const parsed = Date.parse(String(value));
	return Number.isNaN(parsed) ? null : parsed;
}

/** Directus returns bigint columns as strings ("252345"). */
function toNumber(value) {
	if (value === null || value === undefined || value === '') return null;
	const n = typeof value === 'number' ? value : Number(value);
	return Number.isFinite(n) ? n : null;
}

function pad(n) {
	return String(n).padStart(2, '0');
}

var e=[],t=[];function n(n,r){if(n&&"undefined"!=typeof document){var a,s=!0===r.prepend?"prepend":"append",d=!0===r.singleTag,i="string"==typeof r.container?document.querySelector(r.container):document.getElementsByTagName("head")[0];if(d){var u=e.indexOf(i);-1===u&&(u=e.push(i)-1,t[u]={}),a=t[u]&&t[u][s]?t[u][s]:t[u][s]=c();}else a=c();65279===n.charCodeAt(0)&&(n=n.substring(1)),a.styleSheet?a.styleSheet.cssText+=n:a.appendChild(document.createTextNode(n));}function c(){var e=document.createElement("style");if(e.setAttribute("type","text/css"),r.attributes)for(var t=Object.keys(r.attributes),n=0;n<t.length;n++)e.setAttribute(t[n],r.attributes[t[n]]);var a="prepend"===s?"afterbegin":"beforeend";return i.insertAdjacentElement(a,e),e}}

var css$3 = "\n.race-duration[data-v-3a8287af] {\n\tfont-variant-numeric: tabular-nums;\n\twhite-space: nowrap;\n}\n.empty[data-v-3a8287af] {\n\tcolor: var(--theme--foreground-subdued);\n}\n";
n(css$3,{});

var _export_sfc = (sfc, props) => {
  const target = sfc.__vccOpts || sfc;
  for (const [key, val] of props) {
    target[key] = val;
  }
  return target;
};

const _sfc_main$3 = {
	props: {
		value: { type: [String, Number], default: null },
		unit: { type: String, default: 'ms' },
		prefix: { type: String, default: '' },
		hideZero: { type: Boolean, default: false },
	},
	setup(props) {
		const ms = computed(() => {
			const n = toNumber(props.value);
			return n === null ? null : props.unit === 's' ? n * 1000 : n;
		});
		const text = computed(() =>
			props.hideZero && ms.value === 0 ? '' : formatDuration(ms.value, { prefix: props.prefix ?? '' }),
		);
		const exact = computed(() =>
			ms.value === null ? '' : `${formatDuration(ms.value, { digits: 3, prefix: props.prefix ?? '' })}`,
		);
		return { text, exact };
	},
};

const _hoisted_1$3 = ["title"];
const _hoisted_2$2 = {
  key: 1,
  class: "empty"
};

function _sfc_render$3(_ctx, _cache, $props, $setup, $data, $options) {
  return ($setup.text)
    ? (openBlock(), createElementBlock("span", {
        key: 0,
        class: "race-duration",
        title: $setup.exact
      }, toDisplayString($setup.text), 9 /* TEXT, PROPS */, _hoisted_1$3))
    : (openBlock(), createElementBlock("span", _hoisted_2$2, toDisplayString($props.hideZero ? '' : '—'), 1 /* TEXT */))
}
var DisplayComponent$1 = /*#__PURE__*/_export_sfc(_sfc_main$3, [['render',_sfc_render$3],['__scopeId',"data-v-3a8287af"],['__file',"display.vue"]]);

var e0 = defineDisplay({
	id: 'duration-ms',
	name: 'Race duration (m:ss.s)',
	icon: 'timer',
	description: 'A duration as m:ss.s, or h:mm:ss.s from an hour (truncated to the tenth)',
	component: DisplayComponent$1,
	types: ['bigInteger', 'integer', 'float', 'decimal', 'string'],
	options: [
		{
			field: 'unit',
			name: 'Stored in',
			type: 'string',
			meta: {
				width: 'half',
				interface: 'select-dropdown',
				options: {
					choices: [
						{ text: 'milliseconds', value: 'ms' },
						{ text: 'seconds', value: 's' },
					],
				},
			},
			schema: { default_value: 'ms' },
		},
		{
			field: 'prefix',
			name: 'Sign of a positive value',
			type: 'string',
			meta: {
				width: 'half',
				interface: 'input',
				options: { placeholder: '+ for gaps' },
			},
		},
		{
			field: 'hideZero',
			name: 'Nothing for zero',
			type: 'boolean',
			meta: { width: 'half', interface: 'boolean' },
			schema: { default_value: false },
		},
	],
});

var css$2 = "\n.duration[data-v-eb8b43e8] input {\n\tfont-variant-numeric: tabular-nums;\n}\nsmall[data-v-eb8b43e8] {\n\tdisplay: block;\n\tmargin-top: 4px;\n\tcolor: var(--theme--foreground-subdued);\n}\nsmall.error[data-v-eb8b43e8] {\n\tcolor: var(--theme--danger);\n}\n";
n(css$2,{});

const _sfc_main$2 = {
	props: {
		value: { type: [String, Number], default: null },
		disabled: { type: Boolean, default: false },
		unit: { type: String, default: 'ms' },
	},
	emits: ['input'],
	setup(props, { emit }) {
		const text = ref('');
		const error = ref('');
		let emitted;

		const scale = computed(() => (props.unit === 's' ? 1000 : 1));
		const stored = computed(() => {
			const n = toNumber(props.value);
			return n === null ? null : n * scale.value;
		});
		const hint = computed(() => {
			if (stored.value === null) return 'e.g. 5:00 or 1:02:03.4';
			const raw = toNumber(props.value).toLocaleString('en-US');
			return `= ${raw} ${props.unit === 's' ? 's' : 'ms'}`;
		});

		watch(
			() => props.value,
			(value) => {
				if (emitted !== undefined && toNumber(value) === emitted) return;
				const ms = stored.value;
				text.value = formatDuration(ms, { digits: hasMilliseconds(ms) ? 3 : 1 });
				error.value = '';
			},
			{ immediate: true },
		);

		function onInput(typed) {
			text.value = typed ?? '';
			const parsed = parseDuration(text.value);
			if (!parsed.ok) {
				error.value = parsed.error;
				return;
			}
			if (parsed.ms !== null && parsed.ms % scale.value !== 0) {
				error.value = 'Whole seconds only';
				return;
			}
			error.value = '';
			emitted = parsed.ms === null ? null : parsed.ms / scale.value;
			if (emitted !== toNumber(props.value)) emit('input', emitted);
		}

		return { text, error, hint, onInput };
	},
};

const _hoisted_1$2 = { class: "race-duration-input" };

function _sfc_render$2(_ctx, _cache, $props, $setup, $data, $options) {
  const _component_v_icon = resolveComponent("v-icon");
  const _component_v_input = resolveComponent("v-input");

  return (openBlock(), createElementBlock("div", _hoisted_1$2, [
    createVNode(_component_v_input, {
      "model-value": $setup.text,
      disabled: $props.disabled,
      placeholder: $props.unit === 's' ? 'h:mm:ss' : 'm:ss.s',
      class: "duration",
      "onUpdate:modelValue": $setup.onInput
    }, {
      append: withCtx(() => [
        createVNode(_component_v_icon, { name: "timer" })
      ]),
      _: 1 /* STABLE */
    }, 8 /* PROPS */, ["model-value", "disabled", "placeholder", "onUpdate:modelValue"]),
    createElementVNode("small", {
      class: normalizeClass($setup.error ? 'error' : 'hint')
    }, toDisplayString($setup.error || $setup.hint), 3 /* TEXT, CLASS */)
  ]))
}
var InterfaceComponent$1 = /*#__PURE__*/_export_sfc(_sfc_main$2, [['render',_sfc_render$2],['__scopeId',"data-v-eb8b43e8"],['__file',"interface.vue"]]);

var e1 = defineInterface({
	id: 'duration-ms',
	name: 'Race duration (m:ss.s)',
	icon: 'timer',
	description: 'Type a duration as m:ss.s or h:mm:ss.s; stored as an integer (ms or s)',
	component: InterfaceComponent$1,
	types: ['bigInteger', 'integer'],
	group: 'standard',
	options: [
		{
			field: 'unit',
			name: 'Stored in',
			type: 'string',
			meta: {
				width: 'half',
				interface: 'select-dropdown',
				options: {
					choices: [
						{ text: 'milliseconds', value: 'ms' },
						{ text: 'seconds', value: 's' },
					],
				},
			},
			schema: { default_value: 'ms' },
		},
	],
});

/**
 * Which time zone a race time is shown in: the event's (`events.timezone`), never the browser's.
 *
 * A form knows its item, so an input follows a path from it (`stage.event.timezone`) through
 * the relations. A table cell does not: Directus gives a display only its own value. A display
 * therefore takes the zone of the event that was on when the instant happened (events are at
 * most days long and rarely overlap); with no event, or overlapping events in different zones,
 * it uses the nearest event's zone and says so (`zoneIsCertain` false → the cell shows it).
 *
 * Invariant: every function here answers (at worst with UTC, flagged uncertain); a failed
 * request never breaks a form or a table.
 */


const EVENTS_TTL_MS = 60_000;
const MARGIN_MS = 12 * 3600 * 1000;
let events = null; // { at, promise }

/** The events' spans and zones, fetched at most once a minute per browser tab. */
function loadEvents(api) {
	const now = Date.now();
	if (events === null || now - events.at > EVENTS_TTL_MS) {
		const promise = api
			.get('/items/events', {
				params: { fields: ['id', 'timezone', 'starts_at', 'ends_at'], limit: -1 },
			})
			.then((response) =>
				(response.data?.data ?? [])
					.filter((e) => isZone(e.timezone))
					.map((e) => ({
						id: e.id,
						zone: e.timezone,
						starts: Date.parse(e.starts_at),
						ends: Date.parse(e.ends_at),
					})),
			)
			.catch(() => []);
		events = { at: now, promise };
	}
	return events.promise;
}

/** `{ zone, certain }` for an instant (epoch ms, or null for "no value yet"). */
function zoneOfInstant(list, ms) {
	if (list.length === 0) return { zone: 'UTC', certain: false };
	const zones = new Set(list.map((e) => e.zone));
	if (zones.size === 1) return { zone: list[0].zone, certain: true };
	if (ms === null) return { zone: 'UTC', certain: false };
	const on = list.filter((e) => e.starts - MARGIN_MS <= ms && ms <= e.ends + MARGIN_MS);
	const onZones = new Set(on.map((e) => e.zone));
	if (onZones.size === 1) return { zone: on[0].zone, certain: true };
	const distance = (e) => (ms < e.starts ? e.starts - ms : ms > e.ends ? ms - e.ends : 0);
	const nearest = [...(on.length > 0 ? on : list)].sort((a, b) => distance(a) - distance(b))[0];
	return { zone: nearest.zone, certain: false };
}

/**
 * The zone at the end of `path` (e.g. `stage.event.timezone`) from a form's values: nested
 * objects are read as they are, an id is fetched from the related collection. Null when the
 * path cannot be followed yet (a new item without its stage).
 */
async function zoneFromPath({ api, relations, collection, values, path }) {
	const steps = String(path ?? '')
		.split('.')
		.filter(Boolean);
	let current = collection;
	let item = values ?? {};
	for (let i = 0; i < steps.length; i++) {
		const value = item?.[steps[i]];
		if (i === steps.length - 1) return isZone(value) ? value : null;
		const related = relations.getRelationForField(current, steps[i])?.related_collection;
		if (!related || value === null || value === undefined || value === '') return null;
		if (typeof value === 'object') {
			item = value;
			current = related;
			continue;
		}
		const rest = steps.slice(i + 1);
		try {
			const response = await api.get(`/items/${related}/${encodeURIComponent(value)}`, {
				params: { fields: [rest.join('.')] },
			});
			const found = rest.reduce((node, step) => node?.[step], response.data?.data);
			return isZone(found) ? found : null;
		} catch {
			return null;
		}
	}
	return null;
}

var css$1 = "\n.race-time[data-v-af44b5cf] {\n\tfont-variant-numeric: tabular-nums;\n\twhite-space: nowrap;\n}\n.zone[data-v-af44b5cf] {\n\tcolor: var(--theme--foreground-subdued);\n\tfont-size: 0.85em;\n}\n.empty[data-v-af44b5cf] {\n\tcolor: var(--theme--foreground-subdued);\n}\n";
n(css$1,{});

const _sfc_main$1 = {
	props: {
		value: { type: String, default: null },
		format: { type: String, default: 'time' },
		timezone: { type: String, default: null },
		showZone: { type: Boolean, default: false },
	},
	setup(props) {
		const api = useApi();
		const zone = ref(isZone(props.timezone) ? props.timezone : null);
		const certain = ref(zone.value !== null);

		let lookups = 0; // only the latest lookup counts
		watch(
			() => [props.value, props.timezone],
			async () => {
				const lookup = ++lookups;
				if (isZone(props.timezone)) {
					zone.value = props.timezone;
					certain.value = true;
					return;
				}
				const list = await loadEvents(api);
				if (lookup !== lookups) return;
				const found = zoneOfInstant(list, toInstant(props.value));
				zone.value = found.zone;
				certain.value = found.certain;
			},
			{ immediate: true },
		);

		const text = computed(() =>
			zone.value === null ? '' : formatInstant(props.value, zone.value, { format: props.format }),
		);
		const zoneLabel = computed(() => (zone.value ? offsetLabel(props.value, zone.value) : ''));
		const title = computed(() =>
			zone.value === null
				? ''
				: `${formatInstant(props.value, zone.value, { format: 'datetime', digits: 3 })} ${zone.value}` +
				  ` (${zoneLabel.value})${certain.value ? '' : ': no single event zone'}`,
		);
		return { text, title, zoneLabel, certain };
	},
};

const _hoisted_1$1 = ["title"];
const _hoisted_2$1 = {
  key: 0,
  class: "zone"
};
const _hoisted_3 = {
  key: 1,
  class: "empty"
};

function _sfc_render$1(_ctx, _cache, $props, $setup, $data, $options) {
  return ($setup.text)
    ? (openBlock(), createElementBlock("span", {
        key: 0,
        class: "race-time",
        title: $setup.title
      }, [
        createTextVNode(toDisplayString($setup.text), 1 /* TEXT */),
        ($props.showZone || !$setup.certain)
          ? (openBlock(), createElementBlock("span", _hoisted_2$1, " " + toDisplayString($setup.zoneLabel), 1 /* TEXT */))
          : createCommentVNode("v-if", true)
      ], 8 /* PROPS */, _hoisted_1$1))
    : (openBlock(), createElementBlock("span", _hoisted_3, "—"))
}
var DisplayComponent = /*#__PURE__*/_export_sfc(_sfc_main$1, [['render',_sfc_render$1],['__scopeId',"data-v-af44b5cf"],['__file',"display.vue"]]);

var e2 = defineDisplay({
	id: 'datetime-tenths',
	name: 'Race time (event zone, tenths)',
	icon: 'timer',
	description: "An instant as HH:MM:SS.s in the event's time zone (truncated to the tenth)",
	component: DisplayComponent,
	types: ['timestamp', 'dateTime'],
	options: [
		{
			field: 'format',
			name: 'Format',
			type: 'string',
			meta: {
				width: 'half',
				interface: 'select-dropdown',
				options: {
					choices: [
						{ text: 'HH:MM:SS.s', value: 'time' },
						{ text: 'YYYY-MM-DD HH:MM:SS.s', value: 'datetime' },
					],
				},
			},
			schema: { default_value: 'time' },
		},
		{
			field: 'timezone',
			name: 'Time zone',
			type: 'string',
			meta: {
				width: 'half',
				interface: 'input',
				options: { placeholder: "Empty: the event's (events.timezone)" },
			},
		},
		{
			field: 'showZone',
			name: 'Show the zone',
			type: 'boolean',
			meta: { width: 'half', interface: 'boolean' },
			schema: { default_value: false },
		},
	],
});

var css = "\n.fields[data-v-6dea772e] {\n\tdisplay: grid;\n\tgrid-template-columns: minmax(0, 1fr) minmax(0, 1fr);\n\tgap: 8px;\n}\n.time[data-v-6dea772e] input,\n.date[data-v-6dea772e] input {\n\tfont-variant-numeric: tabular-nums;\n}\nsmall[data-v-6dea772e] {\n\tdisplay: block;\n\tmargin-top: 4px;\n\tcolor: var(--theme--foreground-subdued);\n}\nsmall.error[data-v-6dea772e] {\n\tcolor: var(--theme--danger);\n}\n";
n(css,{});

const _sfc_main = {
	props: {
		value: { type: String, default: null },
		disabled: { type: Boolean, default: false },
		collection: { type: String, default: null },
		timezoneField: { type: String, default: null },
		timezone: { type: String, default: null },
	},
	emits: ['input'],
	setup(props, { emit }) {
		const api = useApi();
		const { useRelationsStore } = useStores();
		const relations = useRelationsStore();
		const values = inject('values', ref({}));

		const zone = ref(null);
		const certain = ref(false);
		const dateText = ref('');
		const timeText = ref('');
		const error = ref('');
		// The stored value as shown, so an unchanged time keeps its milliseconds.
		let shown = null; // { date, msOfDay, time }
		let dirty = false;
		let emitted;
		// Only the latest zone lookup counts: an earlier one may answer after it (the form's
		// values arrive after the first lookup started).
		let lookups = 0;

		const firstStep = computed(() => String(props.timezoneField ?? '').split('.')[0]);
		watch(
			() => [props.timezone, props.timezoneField, values.value?.[firstStep.value]],
			resolveZone,
			{ immediate: true },
		);
		watch(
			() => props.value,
			(value) => {
				if (emitted !== undefined && value === emitted) return;
				dirty = false;
				showValue();
			},
		);

		async function resolveZone() {
			const lookup = ++lookups;
			let found = isZone(props.timezone) ? props.timezone : null;
			if (found === null && props.timezoneField) {
				found = await zoneFromPath({
					api,
					relations,
					collection: props.collection,
					values: values.value,
					path: props.timezoneField,
				});
			}
			let guess = null;
			if (found === null) guess = zoneOfInstant(await loadEvents(api), toInstant(props.value));
			if (lookup !== lookups) return;
			zone.value = found ?? guess.zone;
			certain.value = found !== null;
			if (dirty) commit();
			else showValue();
		}

		function showValue() {
			error.value = '';
			if (zone.value === null) return;
			const clock = wallClock(props.value, zone.value);
			if (clock === null) {
				shown = null;
				timeText.value = '';
				dateText.value = props.disabled ? '' : formatInstant(Date.now(), zone.value, { format: 'date' });
				return;
			}
			shown = { ...clock, time: formatTimeOfDay(clock.msOfDay) };
			dateText.value = clock.date;
			timeText.value = shown.time;
		}

		function onDate(text) {
			dateText.value = text ?? '';
			dirty = true;
			commit();
		}

		function onTime(text) {
			timeText.value = text ?? '';
			dirty = true;
			commit();
		}

		function commit() {
			if (zone.value === null) return;
			if (timeText.value.trim() === '') {
				error.value = '';
				send(null);
				return;
			}
			const date = parseDate(dateText.value);
			if (!date.ok) {
				error.value = date.error;
				return;
			}
			let msOfDay;
			if (shown !== null && timeText.value.trim() === shown.time) {
				msOfDay = shown.msOfDay;
			} else {
				const time = parseTimeOfDay(timeText.value);
				if (!time.ok) {
					error.value = time.error;
					return;
				}
				msOfDay = time.msOfDay;
			}
			error.value = '';
			send(instantFromWallClock(date.date, msOfDay, zone.value));
		}

		function send(iso) {
			const current = toInstant(props.value);
			if ((iso === null && current === null) || (iso !== null && toInstant(iso) === current)) return;
			emitted = iso;
			emit('input', iso);
		}

		const hint = computed(() => {
			if (zone.value === null) return '';
			const at = toInstant(props.value) ?? Date.now();
			let text = `${zone.value} (${offsetLabel(at, zone.value)})`;
			if (!certain.value) text += ": the event's zone is not known yet (choose the stage or event)";
			const exact = props.value ? formatInstant(props.value, zone.value, { digits: 3 }) : '';
			if (exact && exact.slice(-2) !== '00') {
				text += ` · exactly ${exact}`;
			}
			return text;
		});

		return { dateText, timeText, error, hint, onDate, onTime };
	},
};

const _hoisted_1 = { class: "race-time-input" };
const _hoisted_2 = { class: "fields" };

function _sfc_render(_ctx, _cache, $props, $setup, $data, $options) {
  const _component_v_input = resolveComponent("v-input");
  const _component_v_icon = resolveComponent("v-icon");

  return (openBlock(), createElementBlock("div", _hoisted_1, [
    createElementVNode("div", _hoisted_2, [
      createVNode(_component_v_input, {
        "model-value": $setup.dateText,
        disabled: $props.disabled,
        placeholder: "YYYY-MM-DD",
        class: "date",
        "onUpdate:modelValue": $setup.onDate
      }, null, 8 /* PROPS */, ["model-value", "disabled", "onUpdate:modelValue"]),
      createVNode(_component_v_input, {
        "model-value": $setup.timeText,
        disabled: $props.disabled,
        placeholder: "HH:MM:SS.s",
        class: "time",
        "onUpdate:modelValue": $setup.onTime
      }, {
        append: withCtx(() => [
          createVNode(_component_v_icon, { name: "schedule" })
        ]),
        _: 1 /* STABLE */
      }, 8 /* PROPS */, ["model-value", "disabled", "onUpdate:modelValue"])
    ]),
    createElementVNode("small", {
      class: normalizeClass($setup.error ? 'error' : 'hint')
    }, toDisplayString($setup.error || $setup.hint), 3 /* TEXT, CLASS */)
  ]))
}
var InterfaceComponent = /*#__PURE__*/_export_sfc(_sfc_main, [['render',_sfc_render],['__scopeId',"data-v-6dea772e"],['__file',"interface.vue"]]);

var e3 = defineInterface({
	id: 'datetime-tenths',
	name: 'Race time (event zone, tenths)',
	icon: 'timer',
	description: "Type an instant as a date and HH:MM:SS.s in the event's time zone; stored in UTC",
	component: InterfaceComponent,
	types: ['timestamp'],
	group: 'standard',
	options: [
		{
			field: 'timezoneField',
			name: 'Time zone from',
			type: 'string',
			meta: {
				width: 'half',
				interface: 'input',
				options: { placeholder: 'e.g. stage.event.timezone' },
				note: "A path from this item to the event's timezone field",
			},
		},
		{
			field: 'timezone',
			name: 'Fixed time zone',
			type: 'string',
			meta: {
				width: 'half',
				interface: 'input',
				options: { placeholder: 'e.g. Europe/Vilnius (overrides the path)' },
			},
		},
	],
});

const interfaces = [e1,e3];const displays = [e0,e2];const layouts = [];const modules = [];const panels = [];const themes = [];const operations = [];

export { displays, interfaces, layouts, modules, operations, panels, themes };
