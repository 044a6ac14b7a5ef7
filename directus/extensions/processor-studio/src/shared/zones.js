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

import { isZone } from './time.js';

const EVENTS_TTL_MS = 60_000;
const MARGIN_MS = 12 * 3600 * 1000;
let events = null; // { at, promise }

/** The events' spans and zones, fetched at most once a minute per browser tab. */
export function loadEvents(api) {
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
export function zoneOfInstant(list, ms) {
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
export async function zoneFromPath({ api, relations, collection, values, path }) {
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
