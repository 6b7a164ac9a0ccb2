// SPDX-License-Identifier: GPL-3.0-or-later
// Flamenco 3 job type "Movie Director Shots": one task per shot of a Movie Director batch file (a storyboard).
//
// Copy this file into the Flamenco Manager's `scripts/` folder and restart the Manager (docs/farm.md). Each task
// runs Blender headless with the Movie Director extension, which generates its shot against the WanGP on that
// worker (loopback by default) and writes `shot-NNNN.mp4` into the job's output folder. A task run again
// (Flamenco's requeue or retry) finds a done shot done in its journal and generates nothing.
// `runner: "cli"` runs the `movie-director shot` command instead of Blender.

const JOB_TYPE = {
    label: "Movie Director Shots",
    description: "Generate a storyboard's shots with WanGP, one task per shot",
    settings: [
        { key: "shots_file", type: "string", subtype: "file_path", required: true,
          description: "The batch file (storyboard), on storage every worker reads" },
        { key: "shot_count", type: "int32", required: true, propargs: { min: 1 },
          description: "How many shots the batch file holds (the compiler cannot read files)" },
        { key: "output_dir", type: "string", subtype: "dir_path", required: true,
          description: "Where shot-NNNN.mp4 and the shots' journals go, on storage every worker reads" },
        { key: "blendfile", type: "string", subtype: "file_path", required: false, visible: "web",
          description: "The blend file Blender opens (runner blender)" },
        { key: "runner", type: "string", choices: ["blender", "cli"], default: "blender", visible: "submission",
          description: "blender: Blender headless with the extension; cli: the movie-director command" },
        { key: "addon_module", type: "string", default: "bl_ext.user_default.blender_movie_director",
          visible: "submission", description: "The extension's module on the workers (runner blender)" },
        { key: "wangp_server", type: "string", default: "", visible: "submission",
          description: "The workers' WanGP URL; empty: WAN2GP_URL, then WanGP on the worker's loopback" },
    ],
};

function compileJob(job) {
    const settings = job.settings;
    const count = settings.shot_count;
    if (!(count >= 1)) {
        throw `shot_count must be at least 1, not ${count}`;
    }
    if (settings.runner === "blender" && !settings.blendfile) {
        throw "runner blender needs a blendfile (or choose runner cli)";
    }
    print(`Movie Director: ${count} shots of ${settings.shots_file} into ${settings.output_dir}`);
    for (let index = 0; index < count; index++) {
        const task = author.Task(`shot-${String(index).padStart(4, "0")}`, settings.runner === "cli" ? "misc" : "blender");
        task.addCommand(shotCommand(settings, index));
        job.addTask(task);
    }
}

// The shot runner's own arguments: the same for `movie-director shot` and the extension's headless entry.
function shotArgs(settings, index) {
    const args = [settings.shots_file, "--shots", String(index), "--output", settings.output_dir];
    if (settings.wangp_server) {
        args.push("--server", settings.wangp_server);
    }
    return args;
}

function shotCommand(settings, index) {
    if (settings.runner === "cli") {
        return author.Command("exec", { exe: "movie-director", args: ["shot"].concat(shotArgs(settings, index)) });
    }
    const expr = `import importlib; importlib.import_module(${JSON.stringify(settings.addon_module + ".headless")}).main()`;
    return author.Command("blender-render", {
        exe: "{blender}",
        exeArgs: "{blenderArgs}",
        argsBefore: [],
        blendfile: settings.blendfile,
        args: ["--python-expr", expr, "--"].concat(shotArgs(settings, index)),
    });
}
