package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "moha",
		Short: "High availability for stock Mosquitto: several brokers, one logical broker",
		Long: `moha makes several unmodified Mosquitto brokers act as one logical MQTT broker.

One 'moha agent' runs beside each broker. It learns which topic filters the
broker's clients subscribe to, shares that interest with the other agents, and
forwards each message published on its broker only to the brokers that have a
matching subscriber. HAProxy (and keepalived for a floating IP) spreads clients
over the brokers.

Start a whole local cluster to try it:   moha up
Load test any MQTT endpoint:             moha bench --url 127.0.0.1:1883`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newAgentCommand(stderr), newUpCommand(stdout, stderr), newInitCommand(stdout, stderr), newRenderCommand(stdout), newStatusCommand(stdout), newVersionCommand(stdout), newBenchCommand(stdout, stderr))
	return root
}

// newLogger returns a text logger at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
