package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestBrowserFollowsAPublish loads the landing page and a run page in
// headless Chromium after signed webhooks, and sees the run's row change
// when the next delivery lands, without a reload. Screenshots of both
// pages are kept with go test -artifacts.
func TestBrowserFollowsAPublish(t *testing.T) {
	chrome := startChromium(t)
	e := startExporter(t, writeConfig(t, coreConfig), filepath.Join(t.TempDir(), "data"), "--storage.retention=0")
	deliveries := exampleRun(t, exampleRunID, "failure")
	e.mustPost(deliveries[0], http.StatusAccepted) // requested: the run is running
	e.mustPost(deliveries[1], http.StatusAccepted) // the job failed
	runs := e.allRuns("")
	if len(runs) != 1 {
		t.Fatalf("runs = %+v", runs)
	}
	id := runs[0].ID
	row := fmt.Sprintf(`document.getElementById("run-%d")`, id)

	landing := chrome.newTab()
	landing.open(e.url + "/")
	if got := landing.text(row + `.innerText`); !strings.Contains(got, "site") || !strings.Contains(got, "running") || !strings.Contains(got, "github") {
		t.Fatalf("landing row = %q", got)
	}
	if got := landing.text(`Array.from(document.querySelectorAll("#run-` + fmt.Sprint(id) + ` .seg")).map(s => s.title).join(",")`); got != "trigger: success,linters: failed" {
		t.Fatalf("stage bar = %q", got)
	}
	// No run of site finished yet: its Pipelines row has no last run.
	if got := landing.text(`document.querySelector("#pipelines tr[data-pipeline=site]").innerText`); strings.Contains(got, "#") {
		t.Fatalf("Pipelines row before the run finished = %q", got)
	}
	// Wait for the live connection before the next delivery, and mark the
	// document: a reload would lose the mark.
	landing.waitJS(`document.querySelector("table[data-live=open]") !== null`, "the event stream opened")
	landing.eval(`window.notReloaded = true`, new(bool))

	page := chrome.newTab()
	page.open(fmt.Sprintf("%s/runs/%d", e.url, id))
	text := page.text(`document.querySelector("main").innerText`)
	for _, want := range []string{fmt.Sprintf("Run #%d of site", id), "trigger", "linters", "failed", "GitHub job"} {
		if !strings.Contains(text, want) {
			t.Errorf("run page lacks %q:\n%s", want, text)
		}
	}
	t.Logf("run page: %s", page.screenshot("run"))

	e.mustPost(deliveries[2], http.StatusAccepted) // completed: the run failed
	landing.waitJS(row+`.querySelector(".status").textContent === "failed"`, "the row to show the run failed")
	// The Pipelines table above follows too: site's last run is this one.
	pipelineRow := `document.querySelector("#pipelines tr[data-pipeline=site]")`
	landing.waitJS(pipelineRow+`.innerText.includes("#`+fmt.Sprint(id)+`") && `+pipelineRow+`.innerText.includes("failed")`, "the Pipelines table to show the run failed")
	var kept bool
	landing.eval(`window.notReloaded === true`, &kept)
	if !kept {
		t.Fatal("the landing page reloaded instead of updating the row")
	}
	t.Logf("landing page: %s", landing.screenshot("landing"))
}
