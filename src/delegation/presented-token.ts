// The one reader of tokens presented back to Deputy — a subject_token to exchange, a token at introspection or
// RFC 7009 revocation, an AuthZEN token subject — whichever format it has:
//  - opaque: stored by oidc-provider in Redis; found through the `StoredAccessTokens` port oauth/ implements
//    (the token, unexpired, and its grant still there for the same client and person, as introspection checks);
//  - RFC 9068 JWT, which oidc-provider does not store: recognised by its signature (Deputy's keys, typ at+jwt,
//    ES256, Deputy's issuer, unexpired) and by its lineage (issued, not revoked).
// Either way only a delegated token (act and delegation claims) is read; anything else is no token.
import { type JWTPayload, type JWTVerifyGetKey, errors as joseErrors, jwtVerify } from "jose";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { actorChain, type DelegatedTokenClaims, isDelegatedTokenClaims } from "./token-claims.ts";
import { tokenRef } from "./token-ref.ts";

export const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]+$/;
const OPAQUE_SHAPE = /^[\w-]{1,512}$/;

/** A delegated access token Deputy issued and still considers active. */
export interface PresentedToken {
  format: "opaque" | "jwt";
  jti: string;
  clientId: string;
  personId: string;
  scopes: string[];
  audience: string[];
  /** Epoch seconds. */
  exp: number;
  /** RFC 9449 §6: the thumbprint of the key a DPoP-bound token is bound to. */
  jkt?: string;
  claims: DelegatedTokenClaims;
  /** The agent chain, the agent holding the token first. */
  chain: string[];
  /** A JWT's verified claims, answered as they are at introspection. */
  jwtClaims?: JwtAccessTokenClaims;
}

export type JwtAccessTokenClaims = JWTPayload &
  DelegatedTokenClaims & {
    jti: string;
    sub: string;
    client_id: string;
    scope?: string;
    cnf?: { jkt?: string };
  };

/** An opaque token as oidc-provider stores it (oauth/ implements the lookup). */
export interface StoredAccessToken {
  jti: string;
  clientId?: string;
  accountId?: string;
  scope?: string;
  aud?: unknown;
  exp?: number;
  jkt?: string;
  extra?: unknown;
}

export interface StoredAccessTokens {
  /** The unexpired stored token whose grant still exists for the same client and person; else undefined. */
  find(value: string): Promise<StoredAccessToken | undefined>;
}

export interface PresentedTokenDeps {
  issuer: string;
  prisma: PrismaClient;
  /** Deputy's own public keys, as the database has them (every process follows rotations). */
  signingKeys: JWTVerifyGetKey;
  stored: StoredAccessTokens;
}

/** The one audience normaliser: a token's `aud` (absent, one string or a list) as a list. */
export function audienceList(aud: unknown): string[] {
  if (typeof aud === "string") return [aud];
  return Array.isArray(aud) ? aud.filter((value): value is string => typeof value === "string") : [];
}

const words = (scope: unknown) =>
  String(scope ?? "")
    .split(" ")
    .filter(Boolean);

export class PresentedTokens {
  readonly #deps: PresentedTokenDeps;

  constructor(deps: PresentedTokenDeps) {
    this.#deps = deps;
  }

  /** The token, if it is an active delegated token Deputy issued (for `audience`, when given); else undefined. */
  async read(value: string, audience?: string): Promise<PresentedToken | undefined> {
    const token = JWT_SHAPE.test(value)
      ? await this.#fromJwt(value)
      : OPAQUE_SHAPE.test(value)
        ? await this.#fromOpaque(value)
        : undefined;
    if (!token || (audience !== undefined && !token.audience.includes(audience))) return undefined;
    return token;
  }

  async #fromOpaque(value: string): Promise<PresentedToken | undefined> {
    const token = await this.#deps.stored.find(value);
    if (!token?.accountId || !token.clientId || !isDelegatedTokenClaims(token.extra)) return undefined;
    return {
      format: "opaque",
      jti: token.jti,
      clientId: token.clientId,
      personId: token.accountId,
      scopes: words(token.scope),
      audience: audienceList(token.aud),
      exp: Number(token.exp),
      jkt: token.jkt,
      claims: token.extra,
      chain: actorChain(token.extra.act),
    };
  }

  async #fromJwt(value: string): Promise<PresentedToken | undefined> {
    const payload = await this.#verifiedPayload(value);
    if (!payload || !(await this.#inLineage(payload.jti))) return undefined;
    return {
      format: "jwt",
      jti: payload.jti,
      clientId: payload.client_id,
      personId: payload.sub,
      scopes: words(payload.scope),
      audience: audienceList(payload.aud),
      exp: Number(payload.exp),
      jkt: typeof payload.cnf?.jkt === "string" ? payload.cnf.jkt : undefined,
      claims: { act: payload.act, delegation: payload.delegation, may_act: payload.may_act },
      chain: actorChain(payload.act),
      jwtClaims: payload,
    };
  }

  async #verifiedPayload(value: string): Promise<JwtAccessTokenClaims | undefined> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(value, this.#deps.signingKeys, {
        issuer: this.#deps.issuer,
        typ: "at+jwt",
        algorithms: ["ES256"],
      }));
    } catch (error) {
      if (error instanceof joseErrors.JOSEError) return undefined;
      throw error;
    }
    const { jti, sub, client_id: clientId } = payload;
    if (typeof jti !== "string" || typeof sub !== "string" || typeof clientId !== "string") return undefined;
    return isDelegatedTokenClaims(payload) ? (payload as JwtAccessTokenClaims) : undefined;
  }

  async #inLineage(jti: string): Promise<boolean> {
    const lineage = await this.#deps.prisma.issuedToken.findUnique({
      where: { jti: tokenRef(jti) },
      select: { revokedAt: true },
    });
    return lineage !== null && lineage.revokedAt === null;
  }
}
