import type { JWTPayload } from 'jose';
import type { GatewayJwt, JwtOutcome, JwtRequest } from './gateway-jwt.ts';

/** What `explain` shows of a policy's gateway_jwt: the refusal, or the verified claims and the keys they render. */
export type JwtExplain =
  | { outcome: 'rejected'; status: number; check: string; error: string; body: unknown }
  | { outcome: 'no_token'; note: string }
  | {
      outcome: 'verified';
      tenant: string;
      service: string;
      version: string;
      instance: string | null;
      version_key: string;
      instance_key: string | null;
      claims: JWTPayload;
    };

export async function explainJwt(jwt: GatewayJwt, req: JwtRequest): Promise<{ explain: JwtExplain; outcome: JwtOutcome }> {
  const outcome = await jwt.check(req);
  if (!outcome.ok) {
    return {
      outcome,
      explain: {
        outcome: 'rejected',
        status: outcome.status,
        check: outcome.check,
        error: outcome.error,
        body: JSON.parse(outcome.body) as unknown,
      },
    };
  }
  if (outcome.payload === undefined) {
    return {
      outcome,
      explain: { outcome: 'no_token', note: 'optional: the request passes with empty routing variables (the policy falls back)' },
    };
  }
  return {
    outcome,
    explain: {
      outcome: 'verified',
      tenant: outcome.tenant ?? '',
      service: outcome.service ?? '',
      version: outcome.version ?? '',
      instance: outcome.instance ?? null,
      version_key: outcome.versionKey ?? '',
      instance_key: outcome.instanceKey ?? null,
      claims: outcome.payload,
    },
  };
}
