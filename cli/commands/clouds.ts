import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ApiClient, CliError } from '../api-client.ts';
import { parseFormat, printStructured, table } from '../output.ts';

interface CloudRow {
  name: string;
  type: string;
  endpoint: string | null;
  models: string[];
}

export function registerClouds(program: Command): void {
  program
    .command('clouds')
    .description('List clouds (never their credentials)')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (opts: { format?: string }) => {
      const format = parseFormat(opts.format);
      const { clouds } = await new ApiClient().get<{ clouds: CloudRow[] }>('/v1/clouds');
      if (printStructured(format, { clouds })) return;
      process.stdout.write(
        `${table(
          ['Cloud', 'Type', 'Endpoint', 'Models'],
          clouds.map((c) => [c.name, c.type, c.endpoint ?? '', c.models.join(',')]),
        )}\n`,
      );
    });

  program
    .command('add-k8s <name>')
    .description('Register a Kubernetes cluster as a cloud; models on it are namespaces, units are pods')
    .requiredOption('--kubeconfig <file>', 'kubeconfig file (its cluster and user are kept, sealed, on the controller)')
    .option('--context <context>', "the kubeconfig's context to use (default: its current context)")
    .action(async (name: string, opts: { kubeconfig: string; context?: string }) => {
      let kubeconfig: string;
      try {
        kubeconfig = readFileSync(opts.kubeconfig, 'utf8');
      } catch (err) {
        throw new CliError(
          `cannot read kubeconfig ${opts.kubeconfig}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
          2,
        );
      }
      const cloud = await new ApiClient().post<{ name: string; endpoint: string }>('/v1/clouds/kubernetes', {
        name,
        kubeconfig,
        ...(opts.context ? { context: opts.context } : {}),
      });
      process.stdout.write(
        `Added Kubernetes cloud "${cloud.name}" (${cloud.endpoint}); add a model on it with: charmflow add-model NAME --cloud ${cloud.name}\n`,
      );
    });

  program
    .command('remove-k8s <name>')
    .alias('remove-cloud')
    .description('Remove a Kubernetes cloud that no model uses')
    .action(async (name: string) => {
      await new ApiClient().delete(`/v1/clouds/${encodeURIComponent(name)}`);
      process.stdout.write(`Removed cloud "${name}".\n`);
    });
}
