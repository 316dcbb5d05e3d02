// The seed documentation's JavaScript example, unchanged apart from where it connects:
// PUT the endpoint on the admin listener, then one completion. Prints the completion JSON.
const { Client } = require('@elastic/elasticsearch')

async function main () {
  const [adminUrl, token, apiKey, modelId, input] = process.argv.slice(2)
  const client = new Client({ node: adminUrl, auth: { bearer: token } })

  await client.inference.put({
    task_type: 'completion',
    inference_id: 'anthropic_completion',
    inference_config: {
      service: 'anthropic',
      service_settings: {
        api_key: apiKey,
        model_id: modelId
      },
      task_settings: {
        max_tokens: 1024
      }
    }
  })

  const response = await client.inference.completion({
    inference_id: 'anthropic_completion',
    input
  })
  console.log(JSON.stringify(response))
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
