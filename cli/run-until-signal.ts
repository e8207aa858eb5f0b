// Long-running commands (up, serve-api, worker): the process owns SIGINT, SIGTERM
// and SIGHUP from its first moment, so a signal during start-up is not lost: the
// controller finishes starting, then stops cleanly.
export async function runUntilSignal<H extends { stop(): Promise<void> }>(
  start: () => Promise<H>,
  onUp: (handle: H) => void,
): Promise<void> {
  let signalled: string | null = null;
  let handle: H | null = null;
  let stopping = false;
  const stop = async () => {
    if (stopping || !handle) return;
    stopping = true;
    process.stderr.write(`charmflow: ${signalled}, stopping...\n`);
    await handle.stop();
    process.stderr.write('charmflow: stopped\n');
    process.exit(0);
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      signalled ??= sig;
      void stop();
    });
  }
  handle = await start();
  onUp(handle);
  if (signalled) await stop();
}
