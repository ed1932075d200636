package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/cockpit"
	"github.com/moha-project/moha/internal/config"
)

// errUnhealthy makes `moha status` exit non-zero (its report says why).
var errUnhealthy = errors.New("the cluster is not healthy")

func newStatusCommand(stdout io.Writer) *cobra.Command {
	var (
		clusterFile, url, token string
		asJSON                  bool
		watch                   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [--cluster FILE | --url HOST:PORT] [--json] [--watch 2s]",
		Short: "One screen for the whole cluster: nodes, links, interest, drops; non-zero exit when unhealthy",
		Long: `Read every agent's /status and show the cluster on one screen: each node
(ready, interest exact or degraded, broker session, clients, filters, retained
topics, messages sent to peers and dropped), the link matrix (what each node
sees of each peer), and the problems, if any.

The agents come from the cluster file (--cluster), or from one agent's address
(--url: it names its peers). /status answers loopback clients, and others with
the cluster file's status_token (read from --cluster, or given with --token).

Exit status: 0 when healthy, 1 when any node is unreachable, not ready or
degraded, or any link is down, stalled or reports its broker down; usable from
monitoring. --watch refreshes until interrupted; --json prints the raw view.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			src, err := statusSource(cmd.Context(), clusterFile, url, token)
			if err != nil {
				return err
			}
			var prev *cockpit.View
			for {
				v := cockpit.Read(cmd.Context(), src, 3*time.Second)
				v.SetRates(prev) // with --watch: messages a second since the last refresh
				prev = v
				if watch > 0 {
					fmt.Fprint(stdout, "\033[H\033[2J") // clear the terminal between refreshes
				}
				if err := writeView(stdout, v, asJSON); err != nil {
					return err
				}
				if watch <= 0 {
					if !v.Healthy() {
						return errUnhealthy
					}
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(watch):
				}
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&clusterFile, "cluster", "", "the cluster file: every node's HTTP address and the status token")
	fl.StringVar(&url, "url", "", "one agent's HTTP address (host:port); its peers are found from it")
	fl.StringVar(&token, "token", "", "the status token (default: the cluster file's status_token)")
	fl.BoolVar(&asJSON, "json", false, "print the view as JSON")
	fl.DurationVar(&watch, "watch", 0, "refresh every this long until interrupted")
	return cmd
}

func statusSource(ctx context.Context, clusterFile, url, token string) (cockpit.Source, error) {
	switch {
	case clusterFile != "" && url != "":
		return cockpit.Source{}, errors.New("give --cluster or --url, not both")
	case clusterFile != "":
		c, err := config.Load(clusterFile)
		if err != nil {
			return cockpit.Source{}, err
		}
		src := cockpit.Source{Agents: map[string]string{}, Token: token}
		if src.Token == "" {
			src.Token = c.StatusToken
		}
		for _, n := range c.Nodes {
			src.Agents[n.Name] = n.HTTP
		}
		return src, nil
	case url != "":
		return cockpit.Discover(ctx, url, token, 3*time.Second)
	}
	return cockpit.Source{}, errors.New("which cluster? give --cluster FILE or --url HOST:PORT (an agent's HTTP address)")
}

func writeView(w io.Writer, v *cockpit.View, asJSON bool) error {
	if !asJSON {
		return v.WriteText(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
