const hooks = [];const endpoints = [];const operations = [];

export { endpoints, hooks, operations };
