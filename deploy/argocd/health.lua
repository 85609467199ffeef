-- Argo CD health of the sandbox-operator's AgentSession and AgentSessionPool
-- (agents.sandbox-operator.dev): the same reading as kstatus (Flux, kapply), with a paused
-- session Suspended. Installed in argocd-cm under both kinds: see docs/status.md.
local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function holds(c)
  return c ~= nil and c.status == "True"
end

-- The condition's message, else its reason, else `otherwise` (no such condition).
local function said(c, otherwise)
  if c == nil then
    return otherwise
  end
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason
end

local function health(status, message)
  return {status = status, message = message}
end

local ready = condition("Ready")
local generation = obj.metadata.generation
local observed = nil
if obj.status ~= nil then
  observed = obj.status.observedGeneration
end

if obj.metadata.deletionTimestamp ~= nil then
  return health("Progressing", "being deleted: " .. said(ready, "waiting for the operator"))
end
if generation ~= nil and observed ~= generation then
  return health("Progressing", "waiting for the operator to observe generation " .. tostring(generation))
end
local stalled = condition("Stalled")
if holds(stalled) then
  return health("Degraded", said(stalled))
end
local reconciling = condition("Reconciling")
if holds(reconciling) then
  return health("Progressing", said(reconciling))
end
if holds(ready) and (ready.reason == "Paused" or ready.reason == "IdlePaused") then
  return health("Suspended", said(ready))
end
if holds(ready) then
  return health("Healthy", said(ready))
end
return health("Progressing", said(ready, "waiting for the operator"))
