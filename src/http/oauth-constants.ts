// Protocol identifiers Deputy uses, kept apart from the provider so the CLI can import them cheaply.
export const TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";
export const CIBA_GRANT = "urn:openid:params:grant-type:ciba";
export const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";

/** The audience of admin API tokens (client_credentials of a service client holding `deputy:admin`). */
export const ADMIN_RESOURCE = "urn:deputy:admin";
export const ADMIN_SCOPE = "deputy:admin";

/** The algorithms an agent may sign its client assertions (private_key_jwt) with. */
export const CLIENT_AUTH_ALGS = ["ES256", "EdDSA", "PS256", "RS256"] as const;
