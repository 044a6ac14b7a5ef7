import { defineDisplay } from '@directus/extensions-sdk';
import DisplayComponent from './display.vue';

export default defineDisplay({
	id: 'duration-ms',
	name: 'Race duration (m:ss.s)',
	icon: 'timer',
	description: 'A duration as m:ss.s, or h:mm:ss.s from an hour (truncated to the tenth)',
	component: DisplayComponent,
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
