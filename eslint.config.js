// Lint: typescript-eslint's recommended rules everywhere, and two import rules from STYLE.md: workflow code imports
// only @temporalio/workflow, governance/, ./definitions and activity *types*; the API imports runtime descriptors only.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', '.data/', 'dist/', 'test-artifacts/', 'db/migrations/'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
    },
  },
  {
    // the API process imports runtime descriptors (runtimes/registry.ts), never an adapter or an SDK: they load in the
    // worker only (test/registry.test.ts checks the whole graph an API process loads)
    files: ['api/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '(^|/)runtimes/(?!kit/)[^/]+/(?!descriptor$)[^/]+$', message: 'the API imports runtime descriptors, never an adapter module (its SDK would load in the API process)' },
            { regex: '^(@anthropic-ai/claude-agent-sdk|@agentclientprotocol/sdk|@langchain/.*|langchain|deepagents|ws|opencode-ai|execa)$', message: 'a runtime SDK loads in the worker only' },
          ],
        },
      ],
    },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/consistent-type-imports': ['error', { prefer: 'type-imports', fixStyle: 'inline-type-imports' }],
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '^node:', message: 'workflow code runs in the deterministic sandbox: no Node built-ins' },
            { regex: '^(fs|path|os|crypto|child_process|http|https|net|process|util)$', message: 'no Node built-ins in workflows' },
            { regex: '(^|/)db(/|$)', message: 'workflows must not touch the database: use an activity' },
            { regex: '(^|/)config(/|$)', message: 'workflows must not read configuration' },
            { regex: '(^|/)(api|worker)(/|$)', message: 'nothing imports api/ or worker/' },
            { regex: '(^|/)runtimes/(?!runtime-adapter$)', message: 'workflows import only the adapter contract types, never an adapter' },
            { regex: '(^|/)activities/(?!types$)', message: 'workflows import only activity types' },
            { regex: '^(pg|drizzle-orm|@electric-sql/pglite|hono|@hono/.*|zod)$', message: 'not in the workflow sandbox' },
          ],
        },
      ],
      'no-restricted-syntax': [
        'error',
        { selector: "MemberExpression[object.name='Math'][property.name='random']", message: 'Math.random is not deterministic: use uuid4() from @temporalio/workflow' },
        { selector: "MemberExpression[object.name='process'][property.name='env']", message: 'workflows do not read process.env' },
        { selector: "CallExpression[callee.object.name='console']", message: 'use log from @temporalio/workflow' },
      ],
    },
  },
);
