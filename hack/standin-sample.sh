#!/usr/bin/env bash
# Prints config/samples/flaskmongoapp.yaml for a real node of the local stack: MongoDB is the
# FerretDB stand-in built here (MONGO_STANDIN_IMAGE of the stack's env file), which takes only
# PLAIN logins. A JSON merge patch given as the argument changes more of the spec.
#
#   hack/standin-sample.sh ['{"spec": {...}}'] | kubectl apply -n NAMESPACE -f -
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MONGO_STANDIN_IMAGE:?source the env file of a stack started with NODE=real}"
kubectl patch --local -f config/samples/flaskmongoapp.yaml --type merge -o yaml \
  -p "{\"spec\": {\"mongo\": {\"image\": \"$MONGO_STANDIN_IMAGE\", \"authMechanism\": \"PLAIN\"}}}" |
  kubectl patch --local -f - --type merge -o yaml -p "${1:-{\}}"
