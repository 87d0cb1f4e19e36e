#!/usr/bin/env node
// The memflow-run command: the launcher is TypeScript compiled by `npm run build` into dist/.
import '../dist/launcher/cli.js';
