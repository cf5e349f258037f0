import { afterAll, beforeAll, it } from "vitest";
import { basicAuth, postForm } from "./helpers/oauth.ts";
import { createAgent, createPerson, createResource, delegate, exchange, TOKEN_EXCHANGE, ACCESS_TOKEN } from "./helpers/scenario.ts";
import { startServer, type TestServer } from "./helpers/server.ts";

let server: TestServer;
beforeAll(async () => { server = await startServer(); });
afterAll(async () => { await server?.close(); });

it("explore", async () => {
  const person = await createPerson(server);
  const res = await createResource(server, "https://cal.example.com", ["calendar.read", "calendar.write"]);
  const agent = await createAgent(server, person.email, [{ resource: res.uri, scopes: ["calendar.read"] }]);
  const { subjectToken } = await delegate(server, { personId: person.id, personEmail: person.email, agent: agent.client_id, scopes: ["calendar.read"], resources: [res.uri] });
  const show = (label: string, r: any) => console.log(label, r.status, typeof r.body === "string" ? r.body.slice(0, 300) : JSON.stringify(r.body).slice(0, 300));
  server.deputy.provider.on("server_error", (_c: any, e: any) => console.log("SERVER_ERROR", e?.code, JSON.stringify(e?.meta), String(e?.message).slice(-300)));
  show("introspect nul", await postForm(server.url + "/token/introspection", { token: "x", client_id: "a\u0000", client_secret: "y" }));
  show("revoke nul", await postForm(server.url + "/token/revocation", { token: "x", client_id: "a\u0000", client_secret: "y" }));
  show("par nul", await postForm(server.url + "/request", { response_type: "code", client_id: "a\u0000", client_secret: "y" }));
  show("auth nul", { status: (await fetch(server.url + "/auth?client_id=a%00&response_type=code")).status, body: "" });
  show("ok", await exchange(server, agent, { subject_token: subjectToken }));
  const form = { grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN };
  show("post nul id", await postForm(server.url + "/token", { ...form, client_id: "agt\u0000x", client_secret: "y" }));
  show("post nul id only", await postForm(server.url + "/token", { ...form, client_id: "agt\u0000x" }));
  show("post ctl id", await postForm(server.url + "/token", { ...form, client_id: "agt\u0001x", client_secret: "y" }));
  show("post uni id", await postForm(server.url + "/token", { ...form, client_id: "agt\ud800x", client_secret: "y" }));
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const assertion = `${b64({ alg: "ES256" })}.${b64({ iss: "a\u0000b", sub: "a\u0000b", aud: server.url, exp: 9999999999, jti: "x" })}.AAAA`;
  show("assert nul", await postForm(server.url + "/token", { ...form, client_assertion: assertion, client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" }));
  show("ok again", await exchange(server, agent, { subject_token: subjectToken }));
});
