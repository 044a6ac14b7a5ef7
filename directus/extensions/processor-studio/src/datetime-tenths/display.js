import { defineDisplay } from '@directus/extensions-sdk';
import DisplayComponent from './display.vue';

export default defineDisplay({
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
