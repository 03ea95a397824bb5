// A gRPC client in another language: loads clawgate's contract from protos/ at run time
// (no generated code), lists the worker's agents and runs one turn over RunTurn.
// Usage: node run_turn.js HOST:PORT AGENT SESSION_KEY TEXT [SECRET]
// Prints one JSON line per RunTurn event (and one with the agents first).
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, agentId, sessionKey, text, secret] = process.argv.slice(2);
const definition = protoLoader.loadSync("clawgate/agent/v1/agent_service.proto", {
  includeDirs: [path.resolve(__dirname, "../../protos")],
  keepCase: true, // field names as the .proto spells them (agent_id, not agentId)
  enums: String,
  longs: String,
  defaults: true,
});
const { AgentService } = grpc.loadPackageDefinition(definition).clawgate.agent.v1;
const client = new AgentService(address, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
if (secret) metadata.set("authorization", `Bearer ${secret}`);

client.ListAgents({}, metadata, (error, listing) => {
  if (error) {
    console.error(`ListAgents: ${error.code} ${error.details}`);
    process.exit(1);
  }
  console.log(JSON.stringify({ agents: listing.agents.map((agent) => agent.id) }));
  const call = client.RunTurn(
    { agent_id: agentId, session_key: sessionKey, input: { role: "ROLE_USER", text } },
    metadata,
  );
  call.on("data", (response) => {
    for (const event of response.events) console.log(JSON.stringify(event));
  });
  call.on("error", (failure) => {
    console.log(JSON.stringify({ status: failure.code, details: failure.details }));
    process.exit(2);
  });
  call.on("end", () => client.close());
});
