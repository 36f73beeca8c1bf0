/**
 * @module
 * The usage plots: points drawn where there are samples, and a sentence, never a flat line, for a series
 * the host cannot measure.
 */
import { describe, expect, it } from 'vitest';
import type { UsageView } from '../usage.ts';
import { niceMax, usagePlots } from './plot.ts';

const view = (over: Partial<UsageView> = {}): UsageView => ({
  id: 'j',
  state: 'succeeded',
  live: false,
  bucketMs: 500,
  series: {
    cpu: { available: true, source: 'cgroup cpu.stat (usage_usec)' },
    memory: { available: false, reason: 'Not measurable here: no memory controller, and no /proc' },
    pids: { available: true, source: 'cgroup pids.current' },
  },
  points: [0, 500, 1000].map((t, i) => ({
    t,
    cpuUsec: t * 100,
    cpuCores: 0.1 * i,
    memoryBytes: null,
    pids: i + 1,
  })),
  ...over,
});

async function render(v: UsageView): Promise<string> {
  return String(await usagePlots(v));
}

describe('usagePlots', () => {
  it('plots each measured series with one point per sample', async () => {
    const html = await render(view());
    expect(html).toMatch(/<svg class="chart chart-cpu"[^>]*data-points="3"/);
    expect(html).toMatch(/<svg class="chart chart-pids"[^>]*data-points="3"/);
    expect(html.match(/<circle class="dot"/g)).toHaveLength(6);
    expect(html).toContain('<desc id="plot-pids-d">3 samples over 1s; peak 3 tasks, last 3 tasks</desc>');
  });

  it('says why a series is not plotted instead of drawing zeros', async () => {
    const html = await render(view());
    expect(html).not.toContain('chart-memory');
    expect(html).toContain(
      'data-unavailable="memory">Not plotted: Not measurable here: no memory controller, and no /proc</p>',
    );
    // The table shows a dash, not 0, for the missing series.
    expect(html).toContain('<tr><td>0ms</td><td>0.00</td><td>–</td><td>1</td></tr>');
  });

  it('says when there are no samples yet', async () => {
    expect(await render(view({ points: [], live: true }))).toContain(
      'No samples yet: the first arrives within a second of the start.',
    );
  });

  it('rounds axis tops to 1, 2 or 5 times a power of ten, or of 1024 for bytes', () => {
    expect(niceMax(0.33)).toBe(0.5);
    expect(niceMax(13)).toBe(20);
    expect(niceMax(101)).toBe(200);
    expect(niceMax(111 * 1024 ** 2, true)).toBe(200 * 1024 ** 2);
    expect(niceMax(0)).toBe(1);
  });
});
