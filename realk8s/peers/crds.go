package peers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// installCRDs applies the podclaim.io CRDs (the client-go way writes SandboxClaim objects)
// with kubectl, as scripts/realk8s.sh does, and agent-sandbox's when it takes part.
func (h *harness) installCRDs(ctx context.Context, _ kubernetes.Interface) error {
	files := []string{h.cfg.CRDs}
	if h.cfg.AgentSandbox != nil && h.cfg.AgentSandbox.CRDs != "" {
		files = append(files, h.cfg.AgentSandbox.CRDs)
	}
	kc := h.cl.UserKubeconfig("peers-harness")
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("CRDs: %w", err)
		}
		out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kc, "apply", "-f", f).CombinedOutput()
		if err != nil {
			return fmt.Errorf("kubectl apply -f %s: %w: %s", f, err, out)
		}
	}
	if h.cfg.AgentSandbox != nil {
		if err := patchConversionNone(ctx, kc); err != nil {
			return err
		}
	}
	out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kc, "wait", "--for", "condition=established",
		"--timeout=60s", "crd", "--all").CombinedOutput()
	if err != nil {
		return fmt.Errorf("CRDs not established: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
