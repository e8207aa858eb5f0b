// Activity options shared by the workflows. Bookkeeping (store writes, clean-up)
// retries without limit: a store that is down for a while must not end a unit
// agent or strand an operation half done; it carries on once the store is back.
import type { ActivityOptions, RetryPolicy } from '@temporalio/workflow';

/** Store writes and clean-up: retried with backoff until they succeed. */
export const BOOKKEEPING_RETRY: RetryPolicy = {
  initialInterval: '1 second',
  backoffCoefficient: 2,
  maximumInterval: '1 minute',
};

export const BOOKKEEPING_ACTIVITY: ActivityOptions = {
  startToCloseTimeout: '2 minutes',
  retry: BOOKKEEPING_RETRY,
};
