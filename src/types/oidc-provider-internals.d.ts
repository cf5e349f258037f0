// Types for the few oidc-provider internals used by src/oauth/provider-internals.ts (the package is pinned).
declare module "oidc-provider/lib/helpers/validate_dpop.js" {
  import type { KoaContextWithOIDC, Provider } from "oidc-provider";
  export interface DpopResult {
    thumbprint: string;
    jti: string;
    iat: number;
  }
  export default function validateDpop(
    provider: Provider,
    ctx: KoaContextWithOIDC,
    accessToken?: string,
  ): Promise<DpopResult | undefined>;
  export function checkDpopReplay(
    provider: Provider,
    ctx: KoaContextWithOIDC,
    dPoP: DpopResult,
    clientId: string,
    ErrorClass?: new (message: string) => Error,
  ): Promise<void>;
}

declare module "oidc-provider/lib/helpers/resource_server.js" {
  import type { ResourceServer as ResourceServerInfo } from "oidc-provider";
  export default class ResourceServer {
    constructor(identifier: string, data: ResourceServerInfo);
    readonly audience?: string;
    readonly accessTokenFormat?: "opaque" | "jwt";
    readonly scope: string;
    readonly scopes: Set<string>;
    identifier(): string;
  }
}
