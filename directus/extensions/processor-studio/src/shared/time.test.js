// node --test src/shared/ (run by tests/unit/test_studio_extensions.py)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
	formatDuration,
	formatInstant,
	hasMilliseconds,
	instantFromWallClock,
	offsetLabel,
	parseDate,
	parseDuration,
	parseTimeOfDay,
	wallClock,
} from './time.js';

test('durations are truncated to the tenth, like processor leaderboard', () => {
	assert.equal(formatDuration(252345), '4:12.3');
	assert.equal(formatDuration('252399'), '4:12.3'); // bigint arrives as a string
	assert.equal(formatDuration(3723499), '1:02:03.4');
	assert.equal(formatDuration(0), '0:00.0');
	assert.equal(formatDuration(59999), '0:59.9');
	assert.equal(formatDuration(1200, { prefix: '+' }), '+0:01.2');
	assert.equal(formatDuration(-1200, { prefix: '+' }), '-0:01.2');
	assert.equal(formatDuration(252345, { digits: 3 }), '4:12.345');
	assert.equal(formatDuration(null), '');
	assert.equal(formatDuration(''), '');
	assert.equal(hasMilliseconds(252345), true);
	assert.equal(hasMilliseconds('252300'), false);
});

test('durations are parsed as typed, milliseconds kept', () => {
	assert.deepEqual(parseDuration('5:00'), { ok: true, ms: 300000 });
	assert.deepEqual(parseDuration('4:12.3'), { ok: true, ms: 252300 });
	assert.deepEqual(parseDuration('4:12.345'), { ok: true, ms: 252345 });
	assert.deepEqual(parseDuration('1:02:03.4'), { ok: true, ms: 3723400 });
	assert.deepEqual(parseDuration('45,5'), { ok: true, ms: 45500 });
	assert.deepEqual(parseDuration('75:00'), { ok: true, ms: 4500000 });
	assert.deepEqual(parseDuration(' '), { ok: true, ms: null });
	for (const bad of ['4:60', '1:60:00', 'five', '4:12.3456', '-5:00']) {
		assert.equal(parseDuration(bad).ok, false, bad);
	}
	for (const ms of [0, 1, 99, 252345, 3723400, 86399999]) {
		assert.equal(parseDuration(formatDuration(ms, { digits: 3 })).ms, ms);
	}
});

test('instants are shown in the event zone, to the tenth', () => {
	const iso = '2026-05-01T06:01:00.199Z';
	assert.equal(formatInstant(iso, 'Europe/Vilnius'), '09:01:00.1');
	assert.equal(formatInstant(iso, 'UTC'), '06:01:00.1');
	assert.equal(formatInstant(iso, 'Europe/Vilnius', { format: 'datetime' }), '2026-05-01 09:01:00.1');
	assert.equal(formatInstant(iso, 'America/New_York', { format: 'datetime' }), '2026-05-01 02:01:00.1');
	assert.equal(formatInstant(iso, 'Europe/Vilnius', { digits: 3 }), '09:01:00.199');
	assert.equal(formatInstant('2026-05-01T21:30:00Z', 'Europe/Vilnius', { format: 'date' }), '2026-05-02');
	assert.equal(offsetLabel(iso, 'Europe/Vilnius'), 'UTC+03:00');
	assert.equal(offsetLabel('2026-01-10T12:00:00Z', 'Europe/Vilnius'), 'UTC+02:00');
	assert.equal(offsetLabel(iso, 'Asia/Kolkata'), 'UTC+05:30');
	assert.equal(formatInstant(null, 'UTC'), '');
	assert.deepEqual(wallClock(iso, 'Europe/Vilnius'), { date: '2026-05-01', msOfDay: 32460199 });
});

test('a typed wall clock in the event zone becomes the right UTC instant', () => {
	const at = (date, time, zone) => instantFromWallClock(date, parseTimeOfDay(time).msOfDay, zone);
	assert.equal(at('2026-05-01', '09:01:00.1', 'Europe/Vilnius'), '2026-05-01T06:01:00.100Z');
	assert.equal(at('2026-05-01', '09:01:00.123', 'Europe/Vilnius'), '2026-05-01T06:01:00.123Z');
	assert.equal(at('2026-01-10', '09:01', 'Europe/Vilnius'), '2026-01-10T07:01:00.000Z');
	assert.equal(at('2026-05-01', '00:30:00', 'Europe/Vilnius'), '2026-04-30T21:30:00.000Z');
	assert.equal(at('2026-05-01', '09:01:00.1', 'UTC'), '2026-05-01T09:01:00.100Z');
	// Vilnius springs forward on 2026-03-29 at 03:00 (→ 04:00) and falls back on 2026-10-25
	// at 04:00 (→ 03:00).
	assert.equal(at('2026-03-29', '02:59:59.9', 'Europe/Vilnius'), '2026-03-29T00:59:59.900Z');
	assert.equal(at('2026-03-29', '04:00:00.0', 'Europe/Vilnius'), '2026-03-29T01:00:00.000Z');
	assert.equal(at('2026-03-29', '03:30:00.0', 'Europe/Vilnius'), '2026-03-29T01:30:00.000Z');
	assert.equal(at('2026-10-25', '03:30:00.0', 'Europe/Vilnius'), '2026-10-25T00:30:00.000Z');
	assert.equal(at('2026-10-25', '04:30:00.0', 'Europe/Vilnius'), '2026-10-25T02:30:00.000Z');
	// Every instant of a day round-trips through its wall clock.
	for (let ms = Date.parse('2026-10-24T20:00:00Z'); ms < Date.parse('2026-10-26T00:00:00Z'); ms += 599999) {
		const clock = wallClock(ms, 'Europe/Vilnius');
		const back = Date.parse(instantFromWallClock(clock.date, clock.msOfDay, 'Europe/Vilnius'));
		// In the repeated hour the first occurrence is chosen: same wall clock, maybe 1 h earlier.
		assert.ok(back === ms || back === ms - 3600000, new Date(ms).toISOString());
	}
});

test('what an official types is read or refused, never guessed', () => {
	assert.deepEqual(parseTimeOfDay('9:01'), { ok: true, msOfDay: 32460000 });
	assert.deepEqual(parseTimeOfDay('09:01:00.1'), { ok: true, msOfDay: 32460100 });
	assert.deepEqual(parseTimeOfDay('09:01:00,12'), { ok: true, msOfDay: 32460120 });
	for (const bad of ['24:00', '09:60', '09:01:61', '9', '09:01:00.1234', 'noon']) {
		assert.equal(parseTimeOfDay(bad).ok, false, bad);
	}
	assert.deepEqual(parseDate('2026-05-01'), { ok: true, date: '2026-05-01' });
	for (const bad of ['2026-02-30', '01.05.2026', '2026-5-1']) assert.equal(parseDate(bad).ok, false, bad);
});
