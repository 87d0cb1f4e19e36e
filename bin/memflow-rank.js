#!/usr/bin/env node
// One rank of the MemFlow store, for launchers other than memflow-run (mpirun, srun): see docs/LAUNCHER.md.
import '../dist/src/cli/memflow-rank.js';
