import { readFileSync } from 'node:fs';

/**
 * How long the event loop is held, measured two ways while some work runs:
 *  - `worstGapMs`: the longest wall-clock gap between two ticks of a 1 ms timer (what a waiting request
 *    feels; on a loaded machine it also includes time the OS did not schedule the process);
 *  - `worstTurnCpuMs`: the most CPU the main thread used between two ticks (the work one turn of the loop
 *    did, read from /proc/self/task/<pid>/stat in 10 ms clock ticks). A busy machine does not inflate it, and
 *    a parser thread's CPU is not the main thread's — so tests assert on it. Linux only; elsewhere it is -1.
 */
export interface LoopProbe {
  stop(): Promise<{ worstGapMs: number; worstTurnCpuMs: number; ticks: number }>;
}

const STAT = `/proc/self/task/${process.pid}/stat`;
const TICK_MS = 10; // USER_HZ (getconf CLK_TCK) is 100 on Linux

function mainThreadCpuMs(): number {
  try {
    const fields = readFileSync(STAT, 'utf8').split(') ')[1]?.split(' ') ?? [];
    // after "pid (comm) ": state is field 0, utime 11, stime 12
    return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  } catch {
    return NaN;
  }
}

export function loopProbe(): LoopProbe {
  let lastAt = performance.now();
  let lastCpu = mainThreadCpuMs();
  let worstGapMs = 0;
  let worstTurnCpuMs = Number.isNaN(lastCpu) ? -1 : 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    const cpu = mainThreadCpuMs();
    worstGapMs = Math.max(worstGapMs, now - lastAt);
    if (!Number.isNaN(cpu)) worstTurnCpuMs = Math.max(worstTurnCpuMs, cpu - lastCpu);
    lastAt = now;
    lastCpu = cpu;
    ticks++;
  }, 1);
  return {
    async stop() {
      // one more tick, so a block that just ended is seen
      await new Promise((r) => setTimeout(r, 15));
      clearInterval(timer);
      return { worstGapMs, worstTurnCpuMs, ticks };
    },
  };
}
