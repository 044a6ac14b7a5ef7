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
export function formatDuration(ms, { digits = 1, prefix = '' } = {}) {
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
export function hasMilliseconds(ms) {
	const value = toNumber(ms);
	return value !== null && Math.abs(Math.trunc(value)) % 100 !== 0;
}

const DURATION = /^(?:(\d+):)?(?:(\d+):)?(\d+)(?:[.,](\d{1,3}))?$/;

/**
 * `5:00` → 300000, `1:02:03.4` → 3723400, `45.5` → 45500 (a bare number is seconds).
 * Returns `{ ok: true, ms }` (`ms` null for an empty text) or `{ ok: false, error }`.
 */
export function parseDuration(text) {
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
export function isZone(zone) {
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
export function wallClock(instant, zone) {
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
export function offsetMs(instant, zone) {
	const ms = toInstant(instant);
	const clock = wallClock(ms, zone);
	const [year, month, day] = clock.date.split('-').map(Number);
	return Date.UTC(year, month - 1, day) + clock.msOfDay - ms;
}

/** `UTC+03:00`. */
export function offsetLabel(instant, zone) {
	const minutes = Math.round(offsetMs(instant, zone) / 60000);
	const sign = minutes < 0 ? '-' : '+';
	const abs = Math.abs(minutes);
	return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** `09:01:00.1` (`format` time), `2026-05-01 09:01:00.1` (datetime), `2026-05-01` (date). */
export function formatInstant(instant, zone, { format = 'time', digits = 1 } = {}) {
	const clock = wallClock(instant, zone);
	if (clock === null) return '';
	if (format === 'date') return clock.date;
	const time = formatTimeOfDay(clock.msOfDay, digits);
	return format === 'datetime' ? `${clock.date} ${time}` : time;
}

/** `09:01:00.1` from milliseconds since local midnight (truncated to the tenth). */
export function formatTimeOfDay(msOfDay, digits = 1) {
	const seconds = Math.floor(msOfDay / 1000);
	const unit = digits === 3 ? 1 : 100;
	const fraction = String(Math.floor((msOfDay % 1000) / unit)).padStart(digits, '0');
	const hms = `${pad(Math.floor(seconds / 3600))}:${pad(Math.floor(seconds / 60) % 60)}:${pad(seconds % 60)}`;
	return `${hms}.${fraction}`;
}

const TIME = /^(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,3}))?)?$/;
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** `9:01`, `09:01:00`, `09:01:00.1`, `09:01:00.123` → milliseconds since local midnight. */
export function parseTimeOfDay(text) {
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
export function parseDate(text) {
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
export function instantFromWallClock(date, msOfDay, zone) {
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
export function toInstant(value) {
	if (value === null || value === undefined || value === '') return null;
	if (value instanceof Date) return value.getTime();
	if (typeof value === 'number') return Number.isFinite(value) ? value : null;
	const parsed = Date.parse(String(value));
	return Number.isNaN(parsed) ? null : parsed;
}

/** Directus returns bigint columns as strings ("252345"). */
export function toNumber(value) {
	if (value === null || value === undefined || value === '') return null;
	const n = typeof value === 'number' ? value : Number(value);
	return Number.isFinite(n) ? n : null;
}

function pad(n) {
	return String(n).padStart(2, '0');
}
