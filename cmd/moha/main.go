// Command moha makes several unmodified Mosquitto brokers act as one
// logical MQTT broker. See `moha --help`.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/moha-project/moha/internal/runtimetune"
)

func main() {
	// The agent's runtime setting is read at start only: re-execute first.
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		runtimetune.Reexec(os.Args)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "moha:", err)
		stop()
		os.Exit(1)
	}
}

// run executes the command line args; it is main without the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
