// A chat with a tool round trip through the official client's unified chat API
// (inference.chatCompletionUnified, a stream of server-sent events): PUT a chat_completion
// endpoint on the admin listener, then three turns on the public one, each built from the
// answers before it, as an application does:
//   1. the system prompt and a question naming the tool: the model calls it;
//   2. the assistant's tool call and the tool's result: the model answers with it;
//   3. a follow-up over the whole history.
// Prints every chunk as one JSON line, {"turn": N, "chunk": {...}}; exits 1 on an error.
//
// argv: adminUrl publicUrl token apiKey modelId inferenceId script, the script being JSON
// {"system", "ask", "tool" (an OpenAI-style tool), "result", "follow_up"}.
const { Client } = require('@elastic/elasticsearch')

// The chunks of one SSE body: the data of each `event: message`, up to `data: [DONE]`.
async function readChunks (stream) {
  const decoder = new TextDecoder()
  const chunks = []
  let pending = ''
  for await (const piece of stream) {
    pending += decoder.decode(piece, { stream: true }).replace(/\r\n/g, '\n')
    let end
    while ((end = pending.indexOf('\n\n')) !== -1) {
      const block = pending.slice(0, end)
      pending = pending.slice(end + 2)
      let name = 'message'
      const data = []
      for (const line of block.split('\n')) {
        const colon = line.indexOf(':')
        const field = colon === -1 ? line : line.slice(0, colon)
        const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
        if (field === 'event') name = value
        else if (field === 'data') data.push(value)
      }
      if (data.length === 0) continue
      if (name === 'error') throw new Error(`error event: ${data.join('\n')}`)
      if (data.join('\n') === '[DONE]') return chunks
      chunks.push(JSON.parse(data.join('\n')))
    }
  }
  throw new Error(`the stream ended without [DONE] after ${chunks.length} chunks`)
}

// The text and the tool calls of a turn, put together from the deltas as OpenAI's clients
// do: content in order, tool calls by their index.
function assemble (chunks) {
  let content = ''
  const calls = []
  for (const chunk of chunks) {
    for (const choice of chunk.choices) {
      content += choice.delta.content || ''
      for (const call of choice.delta.tool_calls || []) {
        const into = calls[call.index] ||= { id: '', type: 'function', function: { name: '', arguments: '' } }
        into.id += call.id || ''
        into.function.name += (call.function && call.function.name) || ''
        into.function.arguments += (call.function && call.function.arguments) || ''
      }
    }
  }
  return { content, toolCalls: calls.filter(Boolean) }
}

async function main () {
  const [adminUrl, publicUrl, token, apiKey, modelId, inferenceId, scriptJson] =
    process.argv.slice(2)
  const script = JSON.parse(scriptJson)
  const admin = new Client({ node: adminUrl, auth: { bearer: token }, requestTimeout: 30000 })
  await admin.inference.put({
    task_type: 'chat_completion',
    inference_id: inferenceId,
    inference_config: {
      service: 'anthropic',
      service_settings: { api_key: apiKey, model_id: modelId },
      task_settings: { max_tokens: 1024 }
    }
  })

  const client = new Client({ node: publicUrl, requestTimeout: 30000 })
  let turn = 0
  async function send (request) {
    turn += 1
    const stream = await client.inference.chatCompletionUnified(
      { inference_id: inferenceId, chat_completion_request: request }, { asStream: true })
    const chunks = await readChunks(stream)
    for (const chunk of chunks) console.log(JSON.stringify({ turn, chunk }))
    return assemble(chunks)
  }

  const history = [
    { role: 'system', content: script.system },
    { role: 'user', content: script.ask }
  ]
  const first = await send({ messages: history, tools: [script.tool], tool_choice: 'auto' })
  if (first.toolCalls.length === 0) throw new Error('turn 1 called no tool')
  history.push({ role: 'assistant', content: first.content, tool_calls: first.toolCalls })
  for (const call of first.toolCalls) {
    history.push({ role: 'tool', tool_call_id: call.id, content: script.result })
  }
  const second = await send({ messages: history, tools: [script.tool] })
  history.push({ role: 'assistant', content: second.content })
  history.push({ role: 'user', content: script.follow_up })
  await send({ messages: history, tools: [script.tool] })
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
