// The audit trail's vocabulary: every action Deputy records, with the type it is filed under. An event names its
// action only; its type comes from this table, so the two can never disagree. `deputy audit query --type` and
// `--action` take these words.
//
// Types: `exchange` token exchanges; `introspection` introspection refusals; `evaluation` per-action (AuthZEN)
// decisions; `consent` people's approvals and the subject tokens they give; `ciba` backchannel requests and
// step-up approvals; `revocation` what revocations reached; `login` sign-ins and client-credentials tokens;
// `policy_change` changes to policies; `admin_change` every other change made through the admin API or CLI;
// `drift` an agent's first use of an action on a resource; `velocity` a shadow rule's would-deny or a containment.
export const AUDIT_TYPES = [
  "exchange",
  "introspection",
  "evaluation",
  "consent",
  "ciba",
  "revocation",
  "login",
  "admin_change",
  "policy_change",
  "drift",
  "velocity",
] as const;
export type AuditType = (typeof AUDIT_TYPES)[number];

/** What starts a revocation (the `revocation.<trigger>` actions). */
export const REVOCATION_TRIGGERS = [
  "task_end",
  "person",
  "admin",
  "suspension",
  "offboarding",
  "sweep",
  "rfc7009",
  "narrowing",
] as const;
export type RevocationTrigger = (typeof REVOCATION_TRIGGERS)[number];

export const AUDIT_ACTIONS = {
  "token.exchange": "exchange",
  "token.introspect": "introspection",
  "access.evaluate": "evaluation",
  "delegation.create": "consent",
  "delegation.deny": "consent",
  "delegation.narrow": "admin_change",
  "subject_token.issue": "consent",
  "ciba.request": "ciba",
  "ciba.refused": "ciba",
  "step_up.approve": "ciba",
  "revocation.task_end": "revocation",
  "revocation.person": "revocation",
  "revocation.admin": "revocation",
  "revocation.suspension": "revocation",
  "revocation.offboarding": "revocation",
  "revocation.sweep": "revocation",
  "revocation.rfc7009": "revocation",
  "revocation.narrowing": "revocation",
  "login.success": "login",
  "login.failure": "login",
  "login.throttled": "login",
  logout: "login",
  "client_credentials.issue": "login",
  "policy.default": "policy_change",
  "policy.apply": "policy_change",
  "velocity_rule.add": "policy_change",
  "velocity_rule.remove": "policy_change",
  "agent.create": "admin_change",
  "agent.update": "admin_change",
  "agent.review": "admin_change",
  "agent.activate": "admin_change",
  "agent.suspend": "admin_change",
  "agent.retire": "admin_change",
  "agent.suspend_all": "admin_change",
  "agent.owner_removed": "admin_change",
  "agent.needs_owner": "admin_change",
  "person.create": "admin_change",
  "person.update": "admin_change",
  "person.offboard": "admin_change",
  "resource.create": "admin_change",
  "resource.update": "admin_change",
  "resource.rotate_secret": "admin_change",
  "service_client.create": "admin_change",
  "service_client.rotate_secret": "admin_change",
  "key.rotate": "admin_change",
  "key.retire": "admin_change",
  "audit.archive": "admin_change",
  "audit.hold.place": "admin_change",
  "audit.hold.release": "admin_change",
  "drift.first_use": "drift",
  "velocity.would_deny": "velocity",
  "velocity.contain": "velocity",
} as const satisfies Record<string, AuditType>;
export type AuditAction = keyof typeof AUDIT_ACTIONS;

/** The type an action is filed under. */
export const auditTypeOf = (action: AuditAction): AuditType => AUDIT_ACTIONS[action];
