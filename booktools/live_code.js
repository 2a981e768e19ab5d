/* Live Code with Thebe 0.9: what sphinx-thebe.js does, for the Thebe that speaks
 * ipywidgets 8 (see live_code.py). The theme's "Live Code" entry calls initThebeSBT(),
 * which adds the status button under the title and calls initThebe(). THEBE_JS_URL,
 * thebe_selector, thebe_selector_input and thebe_selector_output come from the page. */
var initThebe = () => {
  const button = document.querySelector(".thebe-launch-button");
  const say = (text) => { if (button) button.textContent = text; };
  if (window.d2lLiveCode) return;  // one kernel per page
  let started, failed;
  // Settles when the kernel is attached (or fails): what a test can wait for.
  window.d2lLiveCode = new Promise((resolve, reject) => { started = resolve; failed = reject; });

  // Each code cell's source becomes an executable cell, its output the cell's output.
  document.querySelectorAll(thebe_selector).forEach((cell, index) => {
    cell.id = cell.id || `codecell${index}`;
    const source = cell.querySelector(thebe_selector_input);
    const output = cell.querySelector(thebe_selector_output);
    if (!source) return;
    source.setAttribute("data-language", "python");
    source.setAttribute("data-executable", "true");
    if (output) {
      output.setAttribute("data-output", "");
      source.insertAdjacentElement("afterend", output);
    }
    cell.querySelectorAll("button.copybtn").forEach((b) => b.remove());
  });

  const css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = THEBE_JS_URL.replace(/index\.js$/, "thebe.css");
  document.head.appendChild(css);
  const script = document.createElement("script");
  script.src = THEBE_JS_URL;
  script.addEventListener("load", () => {
    thebe.on("status", (event, data) => {
      say(`Live Code: ${data.status}${data.message ? " (" + data.message + ")" : ""}`);
    });
    say("Live Code: starting a kernel...");
    // Thebe 0.9 starts a session only when the argument asks for one, and its
    // useBinder: true default overrides the page's configuration unless passed here
    // (a page configured for a Jupyter server of its own says useBinder: false).
    const onPage = thebe.getPageConfig();
    thebe.bootstrap({ requestKernel: true, useBinder: onPage.useBinder !== false }).then(
      (bootstrapped) => {
        if (!bootstrapped.session) throw new Error("no kernel session was started");
        say("Live Code: ready. Run the cells from the top.");
        started(bootstrapped);
      },
    ).catch((error) => {
      say(`Live Code failed: ${error}`);
      failed(error);
    });
  });
  script.addEventListener("error", () => {
    say("Live Code: Thebe could not be loaded");
    failed(new Error(`could not load ${THEBE_JS_URL}`));
  });
  say("Live Code: loading Thebe...");
  document.head.appendChild(script);
};
