package pipeline

import (
	"fmt"
	"slices"
	"strings"
)

// applyTrigger opens a pending run in every pipeline the trigger matches,
// or adds it to the pipeline's pending run, or, for a GitHub trigger that
// comes after its workflow run, to that run (joinStarted).
func (t *Tracker) applyTrigger(e TriggerEvent) string {
	matched := false
	for i := range t.specs {
		spec := &t.specs[i]
		// A pattern's triggers open runs in the pipelines discovered
		// from it, which have them too.
		if spec.Discover || !triggerMatches(spec, e) || t.shadowed(spec, e) {
			continue
		}
		matched = true
		if t.seenTrigger(spec.Name, e.Trigger) {
			continue
		}
		if t.joinStarted(spec, e) {
			continue
		}
		if p := t.pending[spec.Name]; len(p) > 0 {
			tr := p[len(p)-1]
			tr.run.Triggers = append(tr.run.Triggers, e.Trigger)
			t.touch(tr)
			continue
		}
		tr := t.open(spec, e.Trigger, StatusPending)
		t.addStage(tr, 1, Stage{Name: StageDispatch, Status: StatusRunning, StartedAt: timePtr(e.Trigger.ReceivedAt)})
		t.pending[spec.Name] = append(t.pending[spec.Name], tr)
	}
	if !matched {
		return fmt.Sprintf("no pipeline for %s trigger %s%s", e.Trigger.Source, triggerName(e), t.undiscovered(e))
	}
	return "trigger already seen"
}

// triggerName says which trigger an event is, for an ignored answer.
func triggerName(e TriggerEvent) string {
	switch {
	case e.Table != "":
		return e.Type + " on table " + e.Table
	case e.Repository != "":
		return e.Type + " in repository " + e.Repository
	}
	return e.Type
}

func triggerMatches(spec *Spec, e TriggerEvent) bool {
	return slices.ContainsFunc(spec.Triggers, func(rule TriggerRule) bool { return rule.appliesTo(spec) && ruleMatches(spec, rule, e) })
}

// ruleMatches reports whether a rule of the spec takes the trigger, the
// pipeline it names aside.
func ruleMatches(spec *Spec, rule TriggerRule, e TriggerEvent) bool {
	if e.Trigger.Source == SourceGitHub && (!spec.matchesRepository(e.Repository) ||
		e.Type == "push" && len(spec.Branches) > 0 && !slices.Contains(spec.Branches, e.Branch)) {
		return false
	}
	return rule.Source == e.Trigger.Source &&
		(rule.Table == "" || rule.Table == e.Table) &&
		(len(rule.Events) == 0 || slices.Contains(rule.Events, e.Type))
}

// shadowed reports whether a pipeline that names no repository gives way,
// for a GitHub trigger, to one that names the trigger's repository and
// follows the same workflow on the trigger's branch: the runs of that
// workflow go to that pipeline (see matchWorkflow), so a pending run here
// would never be claimed.
func (t *Tracker) shadowed(spec *Spec, e TriggerEvent) bool {
	if spec.Repository != "" || e.Trigger.Source != SourceGitHub || e.Repository == "" {
		return false
	}
	return slices.ContainsFunc(t.specs, func(o Spec) bool {
		return o.Repository != "" && strings.EqualFold(o.Repository, e.Repository) && o.Workflow == spec.Workflow &&
			(e.Branch == "" || len(o.Branches) == 0 || slices.Contains(o.Branches, e.Branch))
	})
}

// seenTrigger reports whether the trigger already belongs to a run of the
// pipeline that is in progress or finished last, so that applying the same
// trigger twice does not open a second run.
func (t *Tracker) seenTrigger(pipeline string, trig Trigger) bool {
	has := func(r *Run) bool {
		return r != nil && r.Pipeline == pipeline && slices.ContainsFunc(r.Triggers, func(o Trigger) bool { return sameTrigger(o, trig) })
	}
	for _, tr := range t.active {
		if has(tr.run) {
			return true
		}
	}
	return has(t.lastFinished[pipeline])
}

func sameTrigger(a, b Trigger) bool {
	return a.Source == b.Source && a.Event == b.Event && a.DeliveryID == b.DeliveryID &&
		a.ReceivedAt.Equal(b.ReceivedAt) && a.Ref == b.Ref && a.SHA == b.SHA
}
