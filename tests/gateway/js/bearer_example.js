// An application's call with a Kubernetes token, as the official client sends it
// (auth: { bearer }): one completion, then the listing. Prints both as JSON; on a
// refusal, prints {"status": N, "type": "..."} instead and exits 0.
const { Client } = require('@elastic/elasticsearch')

async function main () {
  const [url, token, inferenceId, input] = process.argv.slice(2)
  const client = new Client({ node: url, auth: { bearer: token } })
  try {
    const completion = await client.inference.completion({ inference_id: inferenceId, input })
    const listing = await client.inference.get()
    console.log(JSON.stringify({
      completion: completion.completion,
      listed: listing.endpoints.map((e) => e.inference_id)
    }))
  } catch (error) {
    if (error.meta === undefined) throw error
    console.log(JSON.stringify({ status: error.meta.statusCode, type: error.body.error.type }))
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
