// Validates KEDA objects (ScaledObject, TriggerAuthentication) against KEDA's CRD schema as compiled by
// @kubernetes-models/keda (generated from github.com/kedacore/keda/v2/apis/keda/v1alpha1).
// Input: a JSON array of objects on stdin. Output: one JSON line per object {kind, name, errors}.
// Exit status 1 when any object is invalid or of an unknown kind.
//   npm ci --prefix deploy/k8s/tools && kubectl kustomize ... | (yaml -> json) | node deploy/k8s/tools/validate-keda.mjs
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const MODELS = { ScaledObject, TriggerAuthentication };

let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = false;
for (const object of JSON.parse(input)) {
  const Model = MODELS[object.kind];
  const name = object.metadata?.name ?? "";
  if (object.apiVersion !== "keda.sh/v1alpha1" || !Model) {
    console.log(JSON.stringify({ kind: object.kind, name, errors: [`not a known KEDA kind: ${object.apiVersion} ${object.kind}`] }));
    failed = true;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(JSON.stringify({ kind: object.kind, name, errors: [] }));
  } catch (error) {
    console.log(JSON.stringify({ kind: object.kind, name, errors: [String(error.message ?? error)] }));
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
