// A stand-in of Flamenco 3's job compiler API, for testing our job type with Node.
//
// Flamenco runs a job type's script in an embedded JavaScript engine (goja) with these globals: `author.Task(name,
// type)`, `author.Command(type, parameters)`, a task's `addCommand(command)` and `addDependency(task)`, the job's
// `addTask(task)` and `settings`, and `print(...)`. A script defines `JOB_TYPE` and `compileJob(job)`; a thrown
// string rejects the job. This stand-in gives those and nothing else (no `require`, no file access, as in
// Flamenco), fills in the settings' defaults as the Manager does, then prints the authored job as JSON.
//
// Usage: node flamenco_standin.js JOB_TYPE.js '{"setting": ...}'   (or --job-type: print JOB_TYPE)
"use strict";
const fs = require("fs");
const vm = require("vm");

const [scriptPath, settingsJson] = process.argv.slice(2);
const printed = [];

class AuthoredTask {
    constructor(name, type) {
        if (typeof name !== "string" || typeof type !== "string") throw new TypeError("author.Task(name, type)");
        this.name = name;
        this.type = type;
        this.commands = [];
        this.dependencies = [];
    }
    addCommand(command) {
        if (!(command instanceof AuthoredCommand)) throw new TypeError("addCommand takes an author.Command");
        this.commands.push(command);
    }
    addDependency(task) {
        if (!(task instanceof AuthoredTask)) throw new TypeError("addDependency takes an author.Task");
        this.dependencies.push(task.name);
    }
}

class AuthoredCommand {
    constructor(type, parameters) {
        this.name = type;
        this.parameters = parameters;
    }
}

const context = {
    author: {
        Task: (name, type) => new AuthoredTask(name, type),
        Command: (type, parameters) => new AuthoredCommand(type, parameters),
    },
    print: (...args) => printed.push(args.join(" ")),
};
vm.createContext(context);
vm.runInContext(fs.readFileSync(scriptPath, "utf8") + "\n;this.JOB_TYPE = JOB_TYPE;", context,
                { filename: scriptPath });

if (settingsJson === "--job-type") {  // what the Manager lists of the job type (GET /api/v3/jobs/type/{name})
    console.log(JSON.stringify(context.JOB_TYPE));
    process.exit(0);
}
const settings = {};
for (const s of context.JOB_TYPE.settings) {
    if (s.default !== undefined) settings[s.key] = s.default;
}
Object.assign(settings, JSON.parse(settingsJson));
for (const s of context.JOB_TYPE.settings) {
    if (s.required && (settings[s.key] === undefined || settings[s.key] === "")) {
        console.log(JSON.stringify({ error: `setting ${s.key} is required` }));
        process.exit(0);
    }
}
const tasks = [];
const job = { settings, addTask: (task) => tasks.push(task) };
try {
    context.compileJob(job);
} catch (error) {
    console.log(JSON.stringify({ error: String(error) }));
    process.exit(0);
}
console.log(JSON.stringify({ label: context.JOB_TYPE.label, printed, tasks }));
