// The subscription-trial example: activate a trial, then wait for a payment event for up to 14
// days; without one, downgrade the account.
import { event, task, workflow } from "../index.js";
import { days } from "./clock.js";

export const progress = (line: string) => console.log(`  ${new Date().toISOString().slice(11, 23)}  ${line}`);

const activateTrial = task({
  name: "activate-trial",
  async handler(input: { userId: string }) {
    progress(`trial activated for ${input.userId}`);
    return { plan: "trial" };
  },
});

const upgrade = task({
  name: "upgrade-plan",
  async handler(input: { userId: string; plan: string }) {
    progress(`${input.userId} paid: upgraded to ${input.plan}`);
    return { plan: input.plan };
  },
});

const downgrade = task({
  name: "downgrade-plan",
  async handler(input: { userId: string }) {
    progress(`${input.userId} did not pay within 14 days: downgraded to free`);
    return { plan: "free" };
  },
});

export const subscriptionV1 = workflow({ name: "subscription-trial" }).v("1.0.0", {
  events: { paid: event<{ plan: string }>() },
  async handler(run, input: { userId: string }) {
    await activateTrial.start(run, input);
    const payment = await run.events.paid.wait({ timeout: days(14) });
    if (payment.timeout) return downgrade.start(run, input);
    return upgrade.start(run, { userId: input.userId, plan: payment.data.plan });
  },
});
