// Package launch owns starting and stopping the real processes of a local
// cluster — mosquitto brokers, agents and HAProxy — for `moha up`, for
// `moha bench compare` and for the integration tests. Everything it starts
// it stops: children run in their own process group and die with the
// parent (Pdeathsig) even if moha itself is killed.
package launch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moha-project/moha/internal/poll"
)

// Process is one child process and the file its output goes to.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	once    sync.Once
}

// Start runs bin with args, its stdout and stderr appended to logPath.
func Start(name, logPath, bin string, args ...string) (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// CPUTime returns the user plus system CPU time the process used: the final
// figure once it has exited, else what /proc reports so far.
func (p *Process) CPUTime() time.Duration {
	select {
	case <-p.done:
		if st := p.cmd.ProcessState; st != nil {
			return st.UserTime() + st.SystemTime()
		}
		return 0
	default:
		return procCPUTime(p.cmd.Process.Pid)
	}
}

// procCPUTime reads utime+stime from /proc/<pid>/stat (clock ticks of 1/100 s).
func procCPUTime(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: fields after its ')' are fixed.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Kill ends the process at once (SIGKILL) and waits for it.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop asks the process to end (SIGTERM) and kills it after grace. Safe to
// call more than once.
func (p *Process) Stop(grace time.Duration) {
	p.once.Do(func() {
		p.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			p.Kill()
		}
	})
	<-p.done
}

// FindBinary locates a daemon, also in the sbin directories a non-login
// shell may lack, and says how to install it when it is missing.
func FindBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install it with `sudo apt-get install -y %s`", name, name)
}

// WaitTCP waits until addr accepts a connection, p exits, or ctx ends.
func WaitTCP(ctx context.Context, addr string, p *Process) error {
	return waitUntil(ctx, p, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, "port "+addr)
}

// WaitHTTP waits until url answers 200, p exits (when non-nil), or ctx ends.
func WaitHTTP(ctx context.Context, url string, p *Process) error {
	client := &http.Client{Timeout: time.Second}
	return waitUntil(ctx, p, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, url)
}

var errExited = errors.New("process exited")

// waitUntil polls ok until it holds, p exits (when non-nil), or ctx ends.
func waitUntil(ctx context.Context, p *Process, ok func() bool, what string) error {
	err := poll.Until(ctx, 0, 50*time.Millisecond, func() (bool, error) {
		if ok() {
			return true, nil
		}
		if p != nil {
			if exited, err := p.Exited(); exited {
				return false, fmt.Errorf("%s %w (%v); see %s", p.Name, errExited, err, p.LogPath)
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s: %w", what, err)
	}
	return nil
}
