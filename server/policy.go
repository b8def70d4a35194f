package server

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
)

// Policy defaults: the answer to a before-callback waits DefaultDeadline for the deciders, then the
// failure policy applies. OpenIM waits 5 s for an answer and Tencent 2 s; 1 s leaves them room.
const (
	DefaultDeadline = time.Second
	// MaxDeadline is OpenIM's hard cap on a before-callback's timeout; waiting longer is pointless.
	MaxDeadline = 15 * time.Second
)

// FailurePolicy is what a callback's answer is when no verdict arrives in time.
type FailurePolicy string

// Failure policies.
const (
	FailAllow  FailurePolicy = "allow"
	FailRefuse FailurePolicy = "refuse"
)

// CommandPolicy is the YAML form of one command's settings; unset fields inherit the default.
type CommandPolicy struct {
	// Deadline for the deciders' verdicts, e.g. "800ms".
	Deadline *Duration `yaml:"deadline"`
	// FailurePolicy when the deadline passes or no decider is connected: allow or refuse.
	FailurePolicy *FailurePolicy `yaml:"failure_policy"`
	// Wait for verdicts. Default: true for before-callbacks, false for after-callbacks.
	Wait *bool `yaml:"wait"`
}

// Policies is the per-command configuration file:
//
//	default:
//	  deadline: 1s
//	  failure_policy: allow
//	commands:
//	  callbackBeforeSetGroupInfoExCommand: {deadline: 3s, failure_policy: refuse}
//	  callbackAfterQuitGroupCommand: {wait: true}
type Policies struct {
	Default  CommandPolicy            `yaml:"default"`
	Commands map[string]CommandPolicy `yaml:"commands"`
}

// policy is one command's resolved settings.
type policy struct {
	deadline time.Duration
	failure  FailurePolicy
	wait     *bool // nil: by phase
}

func (p policy) waits(phase pb.Phase) bool {
	if p.wait != nil {
		return *p.wait
	}
	return phase == pb.Phase_PHASE_BEFORE
}

// Validate checks the settings (deadlines, failure policies).
func (p *Policies) Validate() error {
	_, err := p.resolve()
	return err
}

// policySet is Policies resolved for lookups on the hot path.
type policySet struct {
	def      policy
	commands map[string]policy
}

func (p *Policies) resolve() (*policySet, error) {
	set := &policySet{def: policy{deadline: DefaultDeadline, failure: FailAllow}, commands: map[string]policy{}}
	if p == nil {
		return set, nil
	}
	var err error
	if set.def, err = merge(set.def, p.Default); err != nil {
		return nil, fmt.Errorf("default: %w", err)
	}
	for cmd, cp := range p.Commands {
		if set.commands[cmd], err = merge(set.def, cp); err != nil {
			return nil, fmt.Errorf("command %s: %w", cmd, err)
		}
	}
	return set, nil
}

func merge(base policy, cp CommandPolicy) (policy, error) {
	if cp.Deadline != nil {
		d := time.Duration(*cp.Deadline)
		if d <= 0 || d > MaxDeadline {
			return base, fmt.Errorf("deadline %v: want more than 0 and at most %v", d, MaxDeadline)
		}
		base.deadline = d
	}
	if cp.FailurePolicy != nil {
		switch *cp.FailurePolicy {
		case FailAllow, FailRefuse:
			base.failure = *cp.FailurePolicy
		default:
			return base, fmt.Errorf("failure_policy %q: want allow or refuse", *cp.FailurePolicy)
		}
	}
	if cp.Wait != nil {
		base.wait = cp.Wait
	}
	return base, nil
}

func (s *policySet) forCommand(cmd string) policy {
	if p, ok := s.commands[cmd]; ok {
		return p
	}
	return s.def
}

// Duration is a time.Duration written as "1s" or "250ms" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}
