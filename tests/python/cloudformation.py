"""CloudFormation for the deployment tests.

  cloudformation.py decode TEMPLATE             the template as JSON (intrinsics as Fn::* objects),
                                                read by cfn-lint's own YAML decoder
  cloudformation.py deploy ENDPOINT TEMPLATE [KEY=VALUE ...]
                                                creates a stack from it (with those parameters) on a
                                                moto server and prints its outputs as a JSON object
                                                (name -> value)
"""
import json
import sys


def decode(path):
    from cfnlint.decode import decode as cfn_decode

    template, matches = cfn_decode(path)
    if matches:
        sys.exit(f"{path}: {[str(m) for m in matches]}")
    print(json.dumps(template, default=str))


def deploy(endpoint, path, parameters):
    import boto3

    cf = boto3.client(
        "cloudformation",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with open(path) as f:
        body = f.read()
    cf.create_stack(
        StackName="retention-archive",
        TemplateBody=body,
        Parameters=[
            {"ParameterKey": k, "ParameterValue": v}
            for k, v in (p.split("=", 1) for p in parameters)
        ],
    )
    cf.get_waiter("stack_create_complete").wait(
        StackName="retention-archive", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    stack = cf.describe_stacks(StackName="retention-archive")["Stacks"][0]
    print(json.dumps({o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["decode"] and len(sys.argv) == 3:
        decode(sys.argv[2])
    elif sys.argv[1:2] == ["deploy"] and len(sys.argv) >= 4:
        deploy(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)
