# Sourced by the hack/ scripts: where they cache what they build or install, outside the repo.
cache="${SANDBOX_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandbox-operator}"
