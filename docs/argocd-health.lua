-- Argo CD health check for inference-operator.dev/InferenceEndpoint.
-- Install: docs/install.md, "Argo CD". Tested by tests/install/test_install_gitops.py (Lua 5.1)
-- and by tests/argocd/ (a real Argo CD loads this file into argocd-cm).
--
-- Follows kstatus (what Flux and `helm --wait` use), so every tool agrees:
--   a generation the operator has not seen yet, or Reconciling=True  -> Progressing
--   Stalled=True (needs a human: invalid spec, id conflict, key or model refused) -> Degraded
--   Ready=True                                                      -> Healthy
--   anything else (Ready=False/Unknown, no status yet)              -> Progressing
-- Degraded is kept for Stalled: a missing Secret or a gateway restart fix themselves.
-- Uses only Lua's base library, which Argo CD loads without useOpenLibs.

local function condition(conditions, type)
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.reason ~= nil and c.message ~= nil then
    return c.reason .. ": " .. c.message
  end
  return c.message or c.reason or ""
end

local hs = { status = "Progressing", message = "Waiting for the operator to report status" }
local status = obj.status
if status == nil or status.conditions == nil then
  return hs
end
if status.observedGeneration ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local reconciling = condition(status.conditions, "Reconciling")
local stalled = condition(status.conditions, "Stalled")
local ready = condition(status.conditions, "Ready")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling)
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
elseif ready ~= nil then
  hs.message = describe(ready)
end
return hs
