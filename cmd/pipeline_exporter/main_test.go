package main

import (
	"bytes"
	"strings"
	"testing"
)

// kingpinOwn are the flags kingpin adds and hides itself (long help, man
// page, shell completion).
var kingpinOwn = map[string]bool{
	"help-long": true, "help-man": true, "completion-bash": true,
	"completion-script-bash": true, "completion-script-zsh": true,
}

// TestHelpListsEveryFlag: every flag the binary accepts, of the exporter
// and of each command, is in its --help (none is hidden).
func TestHelpListsEveryFlag(t *testing.T) {
	var f flags
	app, _, _ := newApp(&f)
	var out bytes.Buffer
	app.UsageWriter(&out)
	app.Terminate(func(int) {})
	if _, err := app.Parse([]string{"--help"}); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	// listed: a boolean flag is shown as --[no-]name.
	listed := func(help, name string) bool {
		return strings.Contains(help, "--"+name) || strings.Contains(help, "--[no-]"+name)
	}
	model := app.Model()
	n := 0
	for _, fl := range model.Flags {
		if kingpinOwn[fl.Name] {
			continue
		}
		n++
		if fl.Hidden || !listed(help, fl.Name) {
			t.Errorf("--help does not list --%s", fl.Name)
		}
	}
	for _, cmd := range model.Commands {
		out.Reset()
		// With Terminate a no-op, Parse goes on past the help and
		// complains of the command's missing flags: only the help counts.
		_, _ = app.Parse([]string{cmd.Name, "--help"})
		for _, fl := range cmd.Flags {
			n++
			if fl.Hidden || !listed(out.String(), fl.Name) {
				t.Errorf("%s --help does not list --%s:\n%s", cmd.Name, fl.Name, out.String())
			}
		}
	}
	if !strings.Contains(help, "--web.shutdown-timeout") || n < 15 {
		t.Errorf("%d flags, help:\n%s", n, help)
	}
}
