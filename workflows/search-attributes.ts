// Search attributes that make runs findable in the Temporal UI: every run of one
// model, one application, or one kind of operation. Registered at controller start.
import { defineSearchAttributeKey } from '@temporalio/common';

export const SEARCH_ATTRIBUTES = {
  CharmflowModel: 'Keyword',
  CharmflowApplication: 'Keyword',
  CharmflowOperationKind: 'Keyword',
} as const;

export const ModelKey = defineSearchAttributeKey('CharmflowModel', 'KEYWORD');
export const ApplicationKey = defineSearchAttributeKey('CharmflowApplication', 'KEYWORD');
export const OperationKindKey = defineSearchAttributeKey('CharmflowOperationKind', 'KEYWORD');
