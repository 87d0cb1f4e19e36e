// Type-aware lint with the per-folder import bans of docs/ARCHITECTURE.md: each world-touching
// module (ZeroMQ, the file system, child processes) has exactly one home, so the core stays pure.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const ban = (names, message) => ({
  'no-restricted-imports': ['error', { paths: names.map((name) => ({ name, message })) }],
});
const fsNames = ['fs', 'node:fs', 'fs/promises', 'node:fs/promises'];
const childNames = ['child_process', 'node:child_process'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bench/results/**', 'eslint.config.js', 'bin/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['vitest.config.ts'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/no-floating-promises': 'error',
    },
  },
  // zeromq lives only in the ZeroMQ transport; child_process only in the launcher's spawners.
  {
    files: ['src/**/*.ts', 'launcher/**/*.ts'],
    ignores: ['src/comm/zmq-transport.ts', 'src/comm/zmq-*.ts'],
    rules: ban(
      ['zeromq', ...childNames],
      'zeromq belongs to src/comm/zmq-transport.ts; child_process to launcher/spawners',
    ),
  },
  {
    files: ['launcher/spawners/**/*.ts', 'launcher/spawn*.ts'],
    rules: ban(['zeromq'], 'the launcher knows nothing about the transport'),
  },
  // The core (comm, runtime, rank) never touches the disk: it gets storage through interfaces.
  {
    files: ['src/comm/**/*.ts', 'src/runtime/**/*.ts', 'src/rank/**/*.ts'],
    ignores: ['src/comm/zmq-transport.ts', 'src/comm/zmq-*.ts'],
    rules: ban(
      [...fsNames, 'zeromq', ...childNames],
      'core modules get disk, network and processes through injected interfaces',
    ),
  },
  {
    files: ['src/comm/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [...fsNames, 'zeromq', ...childNames].map((name) => ({
            name,
            message: 'comm/ touches only the network, and only in zmq-transport.ts',
          })),
          patterns: [
            {
              group: ['**/store/**', '**/rank/**', '**/client/**'],
              message: 'comm/ knows nothing about files',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/comm/zmq-*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/store/**', '**/rank/**', '**/client/**'],
              message: 'comm/ knows nothing about files',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/require-await': 'off',
    },
  },
);
