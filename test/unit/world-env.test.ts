/**
 * Goal: a rank finds its world from memflow-run's MEMFLOW_* variables or from another launcher's
 * (Open MPI, MPICH, Slurm, torchrun), with a fixed precedence, and a missing or bad value fails
 * with a message that names the variable.
 * Method: parseWorldEnv on plain objects; errors compared by code, variable and message.
 */
import { describe, expect, it } from 'vitest';
import { CommError } from '../../src/comm/errors.js';
import {
  formatHostPort,
  parseHostPort,
  parseWorldEnv,
  type Env,
} from '../../src/comm/world-env.js';

const memflow: Env = {
  MEMFLOW_RANK: '2',
  MEMFLOW_SIZE: '4',
  MEMFLOW_ROOT: '10.0.0.1:7000',
  MEMFLOW_HOST: '10.0.0.3',
  MEMFLOW_JOB_ID: 'ab12cd34',
  MEMFLOW_LOCAL_RANK: '1',
};

function failure(env: Env): CommError {
  try {
    parseWorldEnv(env);
  } catch (error) {
    if (error instanceof CommError) return error;
    throw error;
  }
  throw new Error('expected a CommError');
}

describe('memflow-run variables', () => {
  it('reads every MEMFLOW_* variable', () => {
    expect(parseWorldEnv(memflow)).toEqual({
      rank: 2,
      size: 4,
      root: { host: '10.0.0.1', port: 7000 },
      host: '10.0.0.3',
      jobId: 'ab12cd34',
      localRank: 1,
    });
  });

  it('reads a bracketed IPv6 root and formats it back the same way', () => {
    const env = { ...memflow, MEMFLOW_ROOT: '[fd00::1]:7000' };
    expect(parseWorldEnv(env).root).toEqual({ host: 'fd00::1', port: 7000 });
    expect(formatHostPort({ host: 'fd00::1', port: 7000 })).toBe('[fd00::1]:7000');
    expect(formatHostPort(parseHostPort('node1:80', 'X'))).toBe('node1:80');
  });

  it('takes MEMFLOW_HOST as an IPv6 address with or without brackets', () => {
    expect(parseWorldEnv({ ...memflow, MEMFLOW_HOST: '[fd00::3]' }).host).toBe('fd00::3');
    expect(parseWorldEnv({ ...memflow, MEMFLOW_HOST: 'fd00::3' }).host).toBe('fd00::3');
  });
});

describe('other launchers', () => {
  const root = { MEMFLOW_ROOT: '127.0.0.1:7000' };

  it('reads Open MPI rank, size and local rank', () => {
    const env = {
      ...root,
      OMPI_COMM_WORLD_RANK: '3',
      OMPI_COMM_WORLD_SIZE: '8',
      OMPI_COMM_WORLD_LOCAL_RANK: '1',
    };
    expect(parseWorldEnv(env)).toMatchObject({ rank: 3, size: 8, localRank: 1 });
  });

  it('reads MPICH PMI_RANK/PMI_SIZE and MPI_LOCALRANKID', () => {
    const env = { ...root, PMI_RANK: '1', PMI_SIZE: '2', MPI_LOCALRANKID: '0' };
    expect(parseWorldEnv(env)).toMatchObject({ rank: 1, size: 2, localRank: 0 });
  });

  it('reads Slurm SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID', () => {
    const env = { ...root, SLURM_PROCID: '5', SLURM_NTASKS: '6', SLURM_LOCALID: '2' };
    expect(parseWorldEnv(env)).toMatchObject({ rank: 5, size: 6, localRank: 2 });
  });

  it('reads torchrun-style RANK/WORLD_SIZE/LOCAL_RANK', () => {
    const env = { ...root, RANK: '0', WORLD_SIZE: '1', LOCAL_RANK: '0' };
    expect(parseWorldEnv(env)).toMatchObject({ rank: 0, size: 1, localRank: 0 });
  });

  it('defaults host to a loopback root, jobId to the root, and localRank to the rank', () => {
    expect(parseWorldEnv({ ...root, PMI_RANK: '1', PMI_SIZE: '3' })).toEqual({
      rank: 1,
      size: 3,
      root: { host: '127.0.0.1', port: 7000 },
      host: '127.0.0.1',
      jobId: '127.0.0.1:7000',
      localRank: 1,
    });
  });
});

describe('precedence', () => {
  const all: Env = {
    MEMFLOW_ROOT: '127.0.0.1:7000',
    MEMFLOW_RANK: '0',
    MEMFLOW_SIZE: '10',
    OMPI_COMM_WORLD_RANK: '1',
    OMPI_COMM_WORLD_SIZE: '20',
    PMI_RANK: '2',
    PMI_SIZE: '30',
    SLURM_PROCID: '3',
    SLURM_NTASKS: '40',
    RANK: '4',
    WORLD_SIZE: '50',
  };
  const order = [
    ['MEMFLOW_RANK', 'MEMFLOW_SIZE', 0, 10],
    ['OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 1, 20],
    ['PMI_RANK', 'PMI_SIZE', 2, 30],
    ['SLURM_PROCID', 'SLURM_NTASKS', 3, 40],
    ['RANK', 'WORLD_SIZE', 4, 50],
  ] as const;

  it.each(order.map((row, index) => [row[0], index] as const))(
    '%s wins over every launcher after it',
    (_name, index) => {
      const env = { ...all };
      for (const [rankVar, sizeVar] of order.slice(0, index)) {
        delete env[rankVar];
        delete env[sizeVar];
      }
      const [, , rank, size] = order[index]!;
      expect(parseWorldEnv(env)).toMatchObject({ rank, size });
    },
  );

  it('never mixes a rank from one launcher with a size from another', () => {
    const error = failure({ MEMFLOW_ROOT: '127.0.0.1:1', MEMFLOW_RANK: '0', PMI_SIZE: '2' });
    expect(error.message).toBe('MEMFLOW_SIZE is not set');
  });

  it('prefers MEMFLOW_LOCAL_RANK over the launcher local rank', () => {
    const env = {
      MEMFLOW_ROOT: '127.0.0.1:1',
      OMPI_COMM_WORLD_RANK: '1',
      OMPI_COMM_WORLD_SIZE: '2',
      OMPI_COMM_WORLD_LOCAL_RANK: '1',
      MEMFLOW_LOCAL_RANK: '0',
    };
    expect(parseWorldEnv(env).localRank).toBe(0);
  });
});

describe('errors name the variable', () => {
  const cases: [string, Env, string, RegExp][] = [
    [
      'no rank at all',
      { MEMFLOW_ROOT: '127.0.0.1:1' },
      'MEMFLOW_RANK',
      /^no rank in the environment/,
    ],
    [
      'a missing root',
      { ...memflow, MEMFLOW_ROOT: undefined },
      'MEMFLOW_ROOT',
      /^MEMFLOW_ROOT is not set/,
    ],
    [
      'an empty root',
      { ...memflow, MEMFLOW_ROOT: ' ' },
      'MEMFLOW_ROOT',
      /^MEMFLOW_ROOT is not set/,
    ],
    [
      'a root without port',
      { ...memflow, MEMFLOW_ROOT: 'node1' },
      'MEMFLOW_ROOT',
      /must be host:port/,
    ],
    [
      'a root with port 0',
      { ...memflow, MEMFLOW_ROOT: 'node1:0' },
      'MEMFLOW_ROOT',
      /not in 1-65535/,
    ],
    [
      'a root with a huge port',
      { ...memflow, MEMFLOW_ROOT: 'n:65536' },
      'MEMFLOW_ROOT',
      /not in 1-65535/,
    ],
    [
      'an unbracketed IPv6 root',
      { ...memflow, MEMFLOW_ROOT: 'fd00::1:7000' },
      'MEMFLOW_ROOT',
      /must be/,
    ],
    [
      'a rank that is not a number',
      { ...memflow, MEMFLOW_RANK: 'two' },
      'MEMFLOW_RANK',
      /integer >= 0, got "two"/,
    ],
    ['a negative rank', { ...memflow, MEMFLOW_RANK: '-1' }, 'MEMFLOW_RANK', /integer >= 0/],
    ['a size of zero', { ...memflow, MEMFLOW_SIZE: '0' }, 'MEMFLOW_SIZE', /integer >= 1, got "0"/],
    [
      'a rank not below size',
      { ...memflow, MEMFLOW_RANK: '4' },
      'MEMFLOW_RANK',
      /MEMFLOW_RANK=4 is not below MEMFLOW_SIZE=4/,
    ],
    [
      'a bad local rank',
      { ...memflow, MEMFLOW_LOCAL_RANK: 'x' },
      'MEMFLOW_LOCAL_RANK',
      /integer >= 0/,
    ],
    [
      'a bad Slurm size',
      { MEMFLOW_ROOT: '127.0.0.1:1', SLURM_PROCID: '0', SLURM_NTASKS: '1.5' },
      'SLURM_NTASKS',
      /SLURM_NTASKS must be/,
    ],
    [
      'a bad host',
      { ...memflow, MEMFLOW_HOST: 'a b' },
      'MEMFLOW_HOST',
      /MEMFLOW_HOST must be a host name/,
    ],
    [
      'no host with a remote root',
      { ...memflow, MEMFLOW_HOST: undefined },
      'MEMFLOW_HOST',
      /^MEMFLOW_HOST is not set: with rank 0 at 10.0.0.1:7000/,
    ],
  ];

  it.each(cases)('refuses %s', (_what, env, variable, message) => {
    const error = failure(env);
    expect(error.code).toBe('COMM_BAD_ARGUMENT');
    expect(error.detail.variable).toBe(variable);
    expect(error.message).toMatch(message);
    expect(error.message).toContain(variable);
  });
});
