package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moha-project/moha/internal/session"
)

// Run executes one benchmark: connect every client, subscribe, publish,
// wait for deliveries, disconnect everything, report. If ctx ends during
// the run, the partial result comes back together with an error wrapping
// ctx.Err(); a failure to set up the clients returns no result.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.ClientPrefix == "" {
		o.ClientPrefix = randomClientPrefix()
	}
	p, err := buildPlan(o, o.ClientPrefix)
	if err != nil {
		return nil, err
	}
	r := &runner{opts: o, plan: &p}
	r.tally = newTally(r.plan, binary.BigEndian.Uint64(randomBytes(8)))
	defer r.closeAll()

	if err := r.connectSubscribers(ctx); err != nil {
		return nil, err
	}
	if err := r.connectPublishers(ctx); err != nil {
		return nil, err
	}
	if o.BeforePublish != nil {
		if err := o.BeforePublish(ctx); err != nil {
			return nil, fmt.Errorf("before publish: %w", err)
		}
	}
	r.publishAndDrain(ctx)
	if o.AfterDrain != nil {
		o.AfterDrain(ctx)
	}
	r.closeAll() // handlers have returned once this is done: the tally is final
	res := r.result()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("bench interrupted: %w", err)
	}
	return res, nil
}

// runner holds the state of one Run.
type runner struct {
	opts  Options
	plan  *plan
	tally *tally

	mu          sync.Mutex // guards subscribers and publishers while connecting
	subscribers []*session.Session
	publishers  []*publisher

	// disconnects counts clients whose connection had ended before the
	// run closed it. A subscriber still reading a backlog when its
	// connection is cut finds out late and may not be counted.
	disconnects atomic.Int64
	closeOnce   sync.Once

	firstPublish time.Time
	lastPublish  time.Time
}

func (r *runner) connectSubscribers(ctx context.Context) error {
	r.subscribers = make([]*session.Session, len(r.plan.Subscribers))
	return forEachParallel(ctx, len(r.plan.Subscribers), func(ctx context.Context, i int) error {
		onPayload := func(b []byte) { r.tally.record(i, b, time.Now()) }
		c, err := connectSubscriber(ctx, r.plan.Subscribers[i], r.opts.QoS, r.opts.Persistent, onPayload)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.subscribers[i] = c
		r.mu.Unlock()
		return nil
	})
}

func (r *runner) connectPublishers(ctx context.Context) error {
	r.publishers = make([]*publisher, len(r.plan.Publishers))
	return forEachParallel(ctx, len(r.plan.Publishers), func(ctx context.Context, i int) error {
		p, err := connectPublisher(ctx, i, r.plan.Publishers[i], r.opts.Pipeline)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.publishers[i] = p
		r.mu.Unlock()
		return nil
	})
}

// publishAndDrain starts every publisher at once, waits for them, then
// waits for the expected deliveries until Timeout.
func (r *runner) publishAndDrain(ctx context.Context) {
	stopProgress := r.startProgress()
	defer stopProgress()

	cfg := publishConfig{
		runID:    r.tally.runID,
		messages: r.opts.Messages,
		size:     r.opts.Size,
		json:     r.opts.Payload == PayloadJSON,
		qos:      r.opts.QoS,
		window:   r.opts.Pipeline,
		ackWait:  max(r.opts.Timeout, minAckWait),
	}
	var wg sync.WaitGroup
	r.firstPublish = time.Now()
	for _, p := range r.publishers {
		wg.Go(func() { p.run(ctx, cfg) })
	}
	wg.Wait()
	r.lastPublish = time.Now()

	drain := time.NewTimer(r.opts.Timeout)
	defer drain.Stop()
	select {
	case <-r.tally.complete:
	case <-drain.C:
	case <-ctx.Done():
	}
}

// startProgress writes a line each second to Options.Progress until the
// returned function is called (which waits for the writer to stop).
func (r *runner) startProgress() (stop func()) {
	if r.opts.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		start := time.Now()
		var lastPub, lastDel int64
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				pub, errs := r.publishCounts()
				del := r.tally.delivered.Load()
				fmt.Fprintf(r.opts.Progress, "%4.0fs  published %d (%d/s)  delivered %d/%d (%d/s)  errors %d\n",
					now.Sub(start).Seconds(), pub, pub-lastPub, del, r.plan.Expected, del-lastDel, errs)
				lastPub, lastDel = pub, del
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (r *runner) publishCounts() (published, errs int64) {
	for _, p := range r.publishers {
		published += p.published.Load()
		errs += p.errors.Load()
	}
	return published, errs
}

// closeAll disconnects every client that connected, in parallel; safe to
// call more than once.
func (r *runner) closeAll() {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		subs, pubs := r.subscribers, r.publishers
		r.mu.Unlock()
		var wg sync.WaitGroup
		countLost := func(lost bool) {
			if lost {
				r.disconnects.Add(1)
			}
		}
		for _, c := range subs {
			if c != nil {
				wg.Go(func() { countLost(closeSession(c)) })
			}
		}
		for _, p := range pubs {
			if p != nil {
				wg.Go(func() { countLost(p.close()) })
			}
		}
		wg.Wait()
	})
}

// forEachParallel runs fn for 0..n-1 with bounded parallelism and returns
// the first error; after an error the remaining calls are not started.
func forEachParallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	slots := make(chan struct{}, setupParallelism)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := fn(ctx, i); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("set up clients: %w", err)
	}
	return nil
}
