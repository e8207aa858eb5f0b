// Model settings (`charmflow model-config`): the keys charmflow knows, their
// defaults, and the checks on values. Stored in models.config.
import { BadRequestError } from './errors.ts';

/** Seconds between update-status hooks on every unit of the model (Juju's key). */
export const UPDATE_STATUS_KEY = 'update-status-hook-interval';
export const DEFAULT_UPDATE_STATUS_SECONDS = 300;

export const MODEL_CONFIG_KEYS: Record<string, { description: string; default: string }> = {
  [UPDATE_STATUS_KEY]: {
    description: 'how often every unit runs update-status (a duration: 30s, 5m, 1h)',
    default: '5m',
  },
};

/** `90s`, `5m`, `1h30m`, or plain seconds → seconds; null when it is none of these. */
export function parseDuration(text: string): number | null {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  const m = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(t);
  if (!m || t === '') return null;
  return Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
}

export function formatDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s || (!h && !m) ? `${s}s` : ''}`;
}

/** A checked value for `key`, as stored (the interval in seconds); 400 naming the key otherwise. */
export function checkModelConfig(key: string, value: string): number {
  if (!(key in MODEL_CONFIG_KEYS)) {
    throw new BadRequestError(`unknown model setting "${key}" (known: ${Object.keys(MODEL_CONFIG_KEYS).join(', ')})`, [
      { field: `body.set.${key}`, message: 'unknown setting' },
    ]);
  }
  const seconds = parseDuration(value);
  if (seconds === null || seconds < 1 || seconds > 86_400) {
    throw new BadRequestError(`${key} must be a duration from 1s to 24h (e.g. 30s, 5m), not "${value}"`, [
      { field: `body.set.${key}`, message: 'not a duration from 1s to 24h' },
    ]);
  }
  return seconds;
}

/** The model's update-status interval in ms. */
export function updateStatusMs(config: Record<string, unknown> | null | undefined): number {
  const v = config?.[UPDATE_STATUS_KEY];
  return (typeof v === 'number' && v > 0 ? v : DEFAULT_UPDATE_STATUS_SECONDS) * 1000;
}
