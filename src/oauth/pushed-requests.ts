// RFC 9126 §4: a pushed request's request_uri is for one-time use. oidc-provider marks one used only when the
// authorization response is sent, at the end of the person's sign-in and consent; until then the same
// request_uri opens any number of requests. So its first use at the authorization endpoint claims it, in Redis
// (SET NX: atomic, and shared by every server process), and every later use is refused.
import type { Redis } from "ioredis";
import { errors, type KoaContextWithOIDC } from "oidc-provider";

export class PushedRequestClaims {
  readonly #redis: Redis;
  readonly #prefix: string;

  constructor(redis: Redis, prefix: string) {
    this.#redis = redis;
    this.#prefix = `${prefix}par-used:`;
  }

  /** At the authorization endpoint, for a request made from a pushed request: its one use, or invalid_request_uri. */
  async claim(ctx: KoaContextWithOIDC): Promise<void> {
    const pushed = ctx.oidc.entities.PushedAuthorizationRequest;
    if (ctx.oidc.route !== "authorization" || !pushed) return;
    // Kept as long as the pushed request could still be used (oidc-provider loaded it, so it has not expired).
    const left = Number(pushed.exp) - Math.floor(Date.now() / 1000);
    const seconds = Number.isSafeInteger(left) && left > 0 ? left : 1;
    const first = await this.#redis.set(`${this.#prefix}${pushed.jti}`, "1", "EX", seconds, "NX");
    if (first !== "OK")
      throw new errors.InvalidRequestUri(
        "request_uri was already used: push the request again to get a new one",
      );
  }
}
