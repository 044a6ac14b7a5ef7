import { defineInterface } from '@directus/extensions-sdk';
import InterfaceComponent from './interface.vue';

export default defineInterface({
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
