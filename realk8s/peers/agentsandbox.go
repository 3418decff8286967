package peers

import (
	"context"
	"errors"
)

// AgentSandbox is kubernetes-sigs/agent-sandbox's controller, built by hand outside the tree
// (docs/peers.md): the project keeps none of its code, binaries or build recipes.
type AgentSandbox struct {
	Bin  string // the controller binary
	CRDs string // its CRD manifests (a file or a folder for kubectl apply -f)
}

func (a *AgentSandbox) start(ctx context.Context, h *harness, pool string, n int) (session, error) {
	return nil, errors.New("agent-sandbox: not wired yet")
}
