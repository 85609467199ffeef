// Command kstatus prints what the libraries GitOps tools read status with make of each object:
// kstatus (sigs.k8s.io/cli-utils' status.Compute, Flux's default health check, kapply's and
// Config Sync's), and, given a Flux Kustomization with spec.healthCheckExprs, Flux's CEL health
// check (github.com/fluxcd/pkg/runtime/cel, as kustomize-controller evaluates it).
//
// Usage: kstatus [-flux KUSTOMIZATION.yaml] [FILE]. Input (FILE, else stdin): a JSON array of
// objects, or a List as `kubectl get -o json` prints it. Output: a JSON array with one
// {"kstatus", "message", "flux"} per object, in order ("flux" is empty for kinds without
// expressions, Unknown where they fail to evaluate). The status tests check the operator's status with it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type result struct {
	Kstatus string `json:"kstatus"`
	Message string `json:"message"`
	Flux    string `json:"flux"`
}

func main() {
	flux := flag.String("flux", "", "a Flux Kustomization whose spec.healthCheckExprs to evaluate")
	flag.Parse()
	if err := run(*flux, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(fluxFile string, args []string) error {
	evaluators, err := fluxEvaluators(fluxFile)
	if err != nil {
		return err
	}
	in := io.Reader(os.Stdin)
	if len(args) == 1 {
		file, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer file.Close()
		in = file
	} else if len(args) > 1 {
		return fmt.Errorf("usage: kstatus [-flux KUSTOMIZATION.yaml] [FILE]")
	}
	objects, err := readObjects(in)
	if err != nil {
		return err
	}
	results := make([]result, 0, len(objects))
	for _, object := range objects {
		u := &unstructured.Unstructured{Object: object}
		computed, err := status.Compute(u)
		if err != nil {
			return err
		}
		found := result{Kstatus: string(computed.Status), Message: computed.Message}
		if evaluator, ok := evaluators[u.GroupVersionKind().GroupKind()]; ok {
			// A failed evaluation (a field the object lacks) is Unknown to Flux's poller, as here.
			found.Flux = string(status.UnknownStatus)
			if evaluated, err := evaluator.Evaluate(context.Background(), u); err == nil {
				found.Flux = string(evaluated.Status)
			}
		}
		results = append(results, found)
	}
	return json.NewEncoder(os.Stdout).Encode(results)
}

// readObjects decodes with Kubernetes' own JSON decoding: whole numbers become int64, as both
// libraries expect.
func readObjects(in io.Reader) ([]map[string]any, error) {
	raw, err := io.ReadAll(in)
	if err != nil {
		return nil, err
	}
	var objects []map[string]any
	if err := utiljson.Unmarshal(raw, &objects); err == nil {
		return objects, nil
	}
	var list struct {
		Items []map[string]any `json:"items"`
	}
	if err := utiljson.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("neither a JSON array of objects nor a List: %w", err)
	}
	return list.Items, nil
}

// fluxEvaluators are the Kustomization's health checks by the GroupKind they apply to.
func fluxEvaluators(path string) (map[schema.GroupKind]*fluxcel.StatusEvaluator, error) {
	evaluators := map[schema.GroupKind]*fluxcel.StatusEvaluator{}
	if path == "" {
		return evaluators, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kustomization struct {
		Spec struct {
			HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &kustomization); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, check := range kustomization.Spec.HealthCheckExprs {
		evaluator, err := fluxcel.NewStatusEvaluator(&check.HealthCheckExpressions)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, check.Kind, err)
		}
		evaluators[schema.FromAPIVersionAndKind(check.APIVersion, check.Kind).GroupKind()] = evaluator
	}
	return evaluators, nil
}
