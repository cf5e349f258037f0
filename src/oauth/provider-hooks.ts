// What oidc-provider asks of the people's pages: the port they implement (src/pages/provider-hooks.ts), so that
// oauth/ needs nothing from above it. The rules about agents' requests and tokens stay here, in oauth/.
import type KeyGrip from "keygrip";
import type { Account, Configuration, KoaContextWithOIDC } from "oidc-provider";

type CibaFeature = NonNullable<NonNullable<Configuration["features"]>["ciba"]>;

export interface ProviderHooks {
  /** The cookies' signer (it follows signing key rotations). */
  cookieKeys: KeyGrip;
  /** People are accounts; only active people can be signed in or issued tokens for. */
  findAccount(ctx: KoaContextWithOIDC, id: string): Promise<Account | undefined>;
  /** Who is signed in to Deputy's pages in this browser (an active person), if anyone. */
  signedInPerson(ctx: KoaContextWithOIDC): Promise<string | undefined>;
  /** CIBA: who the login_hint names, and how the person is told of a request. */
  ciba: Required<
    Pick<
      CibaFeature,
      | "processLoginHint"
      | "processLoginHintToken"
      | "validateBindingMessage"
      | "validateRequestContext"
      | "verifyUserCode"
      | "triggerAuthenticationDevice"
    >
  >;
  /** Errors a browser sees get a page. */
  renderError(ctx: KoaContextWithOIDC, out: { error: string; error_description?: string }): Promise<void>;
}
