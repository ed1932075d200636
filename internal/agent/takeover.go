package agent

import (
	"context"
	"time"

	"github.com/moha-project/moha/internal/mesh"
	"github.com/moha-project/moha/internal/session"
)

// keptSessionExpiry is how long a persistent session outlives a takeover
// from another node (the client's own expiry is not visible to the agent).
const keptSessionExpiry = 24 * 60 * 60

// peerClient is the mesh's callback for a CLIENT announcement. It must not
// block: the takeover runs on its own goroutine, owned by the agent's
// WaitGroup through kickWG.
func (a *Agent) peerClient(peer string, n mesh.ClientNote) {
	var kick bool
	switch {
	case a.takeovers.ShouldKick(n, a.node.Name, peer):
		a.metrics.takeovers.Inc()
		kick = true
	case a.takeovers.ShouldEnd(n, a.table.Offline(n.ID)):
		a.metrics.endedSessions.Inc()
		kick = true
	}
	// Unless the client's connection here is the newer one (the peer's goes,
	// or n is an old announcement sent again), its session now lives at peer.
	moved := !a.takeovers.ConnectedHere(n.ID) && a.takeovers.NewerThanHere(n)
	a.replicas.peerClient(peer, n, moved)
	if kick {
		a.kickWG.Go(func() { a.kick(peer, n) })
	}
}

// kick closes the local connection of n.ID by connecting with the same id
// (or, for an offline session and a clean start elsewhere, ends the session).
// The takeover connection mirrors the newer connection's clean start, so
// the old connection's will fares as on a single broker. A clean newer
// connection ends the session here too (session expiry 0). A persistent one
// leaves it in place for keptSessionExpiry: the client's queued messages
// wait here for its return (HAProxy's consistent hashing brings it back to
// this node once it is up), at the price of duplicates it may then get.
func (a *Agent) kick(peer string, n mesh.ClientNote) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := a.sessionConfig(n.ID)
	cfg.CleanStart = n.Clean
	cfg.SessionExpiry = 0
	if !n.Clean {
		cfg.SessionExpiry = keptSessionExpiry
	}
	s, err := session.Dial(ctx, cfg, nil)
	if err != nil {
		a.takeovers.KickFailed(n.ID)
		a.log.Warn("could not close a client connected on another node too", "client", n.ID, "peer", peer, "err", err)
		return
	}
	_ = s.Close()
	a.log.Info("closed a client's older connection or session: it connected again on another node", "client", n.ID, "peer", peer, "clean_start", n.Clean)
}
