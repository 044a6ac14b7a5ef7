import { defineInterface } from '@directus/extensions-sdk';
import InterfaceComponent from './interface.vue';

export default defineInterface({
	id: 'duration-ms',
	name: 'Race duration (m:ss.s)',
	icon: 'timer',
	description: 'Type a duration as m:ss.s or h:mm:ss.s; stored as an integer (ms or s)',
	component: InterfaceComponent,
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
